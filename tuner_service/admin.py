"""Checks behind the operator RPCs (Explain, Pin, Reset, Summary): unknown names and unsafe values are
refused with a gRPC status name and a message, before any state is touched."""

from __future__ import annotations

from .hosts import split_key
from .policy import Policy
from .state import ModelState


class Refusal(Exception):
    """An operator request that must not proceed; ``code`` names the gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def known_model(policy: Policy, key: str) -> ModelState:
    """The model's state, or NOT_FOUND (a name only ever recommended for is not known)."""
    model = policy.models.get(key)
    if model is None or not model.confirmed:
        model_name, host = split_key(key)
        where = f" on host {host!r}" if host else ""
        raise Refusal(
            "NOT_FOUND",
            f"model {model_name!r}{where} is unknown to the tuner (no outcome, pin or stored state): check the name",
        )
    return model


def known_template(policy: Policy, key: str, template_id: int) -> ModelState:
    """The model's state when it has ``template_id``, else NOT_FOUND."""
    model = known_model(policy, key)
    if template_id not in model.templates:
        raise Refusal("NOT_FOUND", f"template {template_id} is unknown for model {split_key(key)[0]!r}")
    return model


def known(policy: Policy, key: str, template_id: int) -> ModelState:
    """A known template of a known model, or the model alone when ``template_id`` is 0; else NOT_FOUND."""
    return known_template(policy, key, template_id) if template_id else known_model(policy, key)


def check_pin(policy: Policy, key: str, template_id: int, num_ctx: int, num_batch: int) -> None:
    """Pins name a known model and a template seen on some model, a ladder rung within the model's
    limit and caps, and one of the tuner's num_batch values."""
    model = known_model(policy, key)
    if template_id <= 0:
        raise Refusal("INVALID_ARGUMENT", "pin needs a template_id")
    if not any(template_id in m.templates for m in policy.models.values()):
        raise Refusal("NOT_FOUND", f"template {template_id} is unknown to the tuner")
    rungs = policy.rungs(model)
    if num_ctx and num_ctx > rungs[-1]:
        raise Refusal("INVALID_ARGUMENT", f"num_ctx {num_ctx} is above the model's limit {rungs[-1]}")
    if num_ctx and num_ctx not in rungs:
        raise Refusal(
            "INVALID_ARGUMENT",
            f"num_ctx {num_ctx} is not a rung of the ladder: {', '.join(map(str, rungs[:6]))}, ... {rungs[-1]}",
        )
    arms = policy.s.num_batch_arms
    if num_batch and num_batch not in arms:
        raise Refusal("INVALID_ARGUMENT", f"num_batch {num_batch} is not one of {', '.join(map(str, arms))}")
