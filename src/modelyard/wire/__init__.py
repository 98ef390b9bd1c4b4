"""Wire codecs: the JSON that modelyard's own API speaks, to and from the internal shape."""
