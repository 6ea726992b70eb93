"""The tuner's leases: what they list, bounded by recency, and when none is granted (read only)."""

from __future__ import annotations

from tuner_service.lease import MAX_RULES, grant
from tuner_service.policy import Policy
from tuner_service.settings import PolicySettings
from tuner_service.state import ModelState, TemplateState


def _managed(templates: int) -> Policy:
    policy = Policy(PolicySettings())
    model = policy.models["m"] = ModelState(managed=True, loaded_ctx=8192, loaded_batch=512, confirmed=True)
    for template_id in range(1, templates + 1):  # inserted in use order: the last is the most recent
        model.templates[template_id] = TemplateState(floor_ctx=template_id)
    return policy


def test_a_lease_lists_the_most_recent_templates_only() -> None:
    policy = _managed(MAX_RULES + 50)
    policy.models["m"].templates[MAX_RULES + 50].pinned = True
    model = policy.models["m"]
    before = (list(model.templates), [t.cached_need for t in model.templates.values()], model.requests)
    lease = grant(policy, "m", 0)
    assert lease.granted and (lease.num_ctx, lease.num_batch) == (8192, 512) and lease.ttl_ms > 0
    ids = [rule.template_id for rule in lease.rules]
    assert ids == list(range(MAX_RULES + 49, 50, -1))  # the newest MAX_RULES - 1 besides the pinned one
    assert [rule.floor_ctx for rule in lease.rules] == ids
    after = (list(model.templates), [t.cached_need for t in model.templates.values()], model.requests)
    assert after == before  # granting neither counts a request nor moves a template in the recency order


def test_no_lease_while_the_next_request_must_reload_or_nothing_is_managed() -> None:
    assert grant(Policy(PolicySettings()), "m", 0).reason_code == "unknown_model"
    policy = _managed(1)
    policy.models["m"].managed = False
    assert grant(policy, "m", 0).reason_code == "unmanaged"
    for change in ({"displaced": True}, {"relieve": ("reset", "template 1 was reset")}):
        policy = _managed(1)
        for name, value in change.items():
            setattr(policy.models["m"], name, value)
        refused = grant(policy, "m", 0)
        assert not refused.granted and refused.reason_code == "change_pending" and not refused.rules
    assert grant(_managed(1), "m", 4096).reason_code == "over_cap"
