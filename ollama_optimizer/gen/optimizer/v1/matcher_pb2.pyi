from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WindowFingerprint(_message.Message):
    __slots__ = ("window", "fingerprint")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    window: int
    fingerprint: int
    def __init__(self, window: _Optional[int] = ..., fingerprint: _Optional[int] = ...) -> None: ...

class Fingerprints(_message.Message):
    __slots__ = ("algorithm_version", "windows", "unit_count", "head_units")
    ALGORITHM_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    UNIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEAD_UNITS_FIELD_NUMBER: _ClassVar[int]
    algorithm_version: int
    windows: _containers.RepeatedCompositeFieldContainer[WindowFingerprint]
    unit_count: int
    head_units: int
    def __init__(self, algorithm_version: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[WindowFingerprint, _Mapping]]] = ..., unit_count: _Optional[int] = ..., head_units: _Optional[int] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("model", "text", "units_after_text")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UNITS_AFTER_TEXT_FIELD_NUMBER: _ClassVar[int]
    model: str
    text: str
    units_after_text: int
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., units_after_text: _Optional[int] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("matched", "template_id", "window", "distance", "similarity", "prompt_units", "fingerprints", "observations", "cache_hit")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_UNITS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    template_id: int
    window: int
    distance: int
    similarity: float
    prompt_units: int
    fingerprints: Fingerprints
    observations: int
    cache_hit: bool
    def __init__(self, matched: _Optional[bool] = ..., template_id: _Optional[int] = ..., window: _Optional[int] = ..., distance: _Optional[int] = ..., similarity: _Optional[float] = ..., prompt_units: _Optional[int] = ..., fingerprints: _Optional[_Union[Fingerprints, _Mapping]] = ..., observations: _Optional[int] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("model", "fingerprints", "template_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    fingerprints: Fingerprints
    template_id: int
    def __init__(self, model: _Optional[str] = ..., fingerprints: _Optional[_Union[Fingerprints, _Mapping]] = ..., template_id: _Optional[int] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("template_id", "created", "stable_window", "observations")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STABLE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    template_id: int
    created: bool
    stable_window: int
    observations: int
    def __init__(self, template_id: _Optional[int] = ..., created: _Optional[bool] = ..., stable_window: _Optional[int] = ..., observations: _Optional[int] = ...) -> None: ...

class ObserveBatchRequest(_message.Message):
    __slots__ = ("observations",)
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    observations: _containers.RepeatedCompositeFieldContainer[ObserveRequest]
    def __init__(self, observations: _Optional[_Iterable[_Union[ObserveRequest, _Mapping]]] = ...) -> None: ...

class ObserveRejection(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ObserveBatchResponse(_message.Message):
    __slots__ = ("results", "rejected")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ObserveResponse]
    rejected: _containers.RepeatedCompositeFieldContainer[ObserveRejection]
    def __init__(self, results: _Optional[_Iterable[_Union[ObserveResponse, _Mapping]]] = ..., rejected: _Optional[_Iterable[_Union[ObserveRejection, _Mapping]]] = ...) -> None: ...

class GetTemplateRequest(_message.Message):
    __slots__ = ("template_id",)
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    template_id: int
    def __init__(self, template_id: _Optional[int] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("template_id", "created_at", "updated_at", "last_seen_at", "observations", "mean_distance", "stable_window", "algorithm_version", "windows")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    MEAN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    STABLE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    template_id: int
    created_at: float
    updated_at: float
    last_seen_at: float
    observations: int
    mean_distance: float
    stable_window: int
    algorithm_version: int
    windows: _containers.RepeatedCompositeFieldContainer[TemplateWindow]
    def __init__(self, template_id: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., last_seen_at: _Optional[float] = ..., observations: _Optional[int] = ..., mean_distance: _Optional[float] = ..., stable_window: _Optional[int] = ..., algorithm_version: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[TemplateWindow, _Mapping]]] = ...) -> None: ...

class TemplateWindow(_message.Message):
    __slots__ = ("window", "fingerprint", "votes")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    window: int
    fingerprint: int
    votes: int
    def __init__(self, window: _Optional[int] = ..., fingerprint: _Optional[int] = ..., votes: _Optional[int] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("limit", "after_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    after_id: int
    def __init__(self, limit: _Optional[int] = ..., after_id: _Optional[int] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates", "next_after_id")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    next_after_id: int
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ..., next_after_id: _Optional[int] = ...) -> None: ...
