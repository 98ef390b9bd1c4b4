"""The HTTP front end: thin handlers that read a request, run the pipeline, and write the answer."""
