"""Checks at the bottom of the layer order, usable from every layer above.

- :mod:`modelyard.validators.output`: output validators, checks on a model's answer text that can
  reject it (and make the router try again);
- :mod:`modelyard.validators.names`: the rule for model and route names taken from a request
  (``model``, ``modelyard.route``, ``X-Modelyard-Route``...), checked where they enter.
"""

from modelyard.validators.names import (
    MAX_MODEL_NAME,
    check_model_name,
    model_name_problem,
)
from modelyard.validators.output import (
    ValidationFailed,
    Validator,
    build_validator,
    build_validators,
    validate_json_schema,
)

__all__ = [
    "MAX_MODEL_NAME",
    "ValidationFailed",
    "Validator",
    "build_validator",
    "build_validators",
    "check_model_name",
    "model_name_problem",
    "validate_json_schema",
]
