"""Property-based fuzzing of the fingerprint and canonical-text code: `python -m bench.fuzz [--examples N]`.

Properties (each run for N generated inputs; the last line is one JSON object with the counts):
- fingerprint: never fails except ValueError on a text without tokens; the token count equals one pass of
  the documented regex over the lower-cased text; windows as ``windows_for``; 64-bit values; deterministic;
  each window's fingerprint depends only on that prefix (appending text never changes it).
- canonical_text: any JSON-like request (any types anywhere) gives a string, never an exception; for
  well-formed chats it is exactly ``"{role}: {content}\\n"`` per message.
- within_cap: never fails (lone surrogates included) and agrees with the UTF-8 length.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompt_fingerprint import TOKEN_RE, fingerprint, windows_for
from proxy_plugin.canonical import canonical_text, within_cap

SHINGLES = (3, 4, 5)
# Unicode text as protobuf carries it (no lone surrogates), biased towards word/punctuation/space mixes.
_text = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=st.sampled_from(list("ab1 9f-_.,\n\tÉßİ日本\u00a0\u200b")), max_size=3000),
    st.lists(
        st.sampled_from(["the", "2024-01-01", "0xdeadbeef", "İstanbul", "ﬁ", "٣", "—", "!", " ", "\n"]), max_size=1500
    ).map(" ".join),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=200)}
)
_request = st.one_of(
    st.dictionaries(st.sampled_from(["messages", "prompt", "system", "model", "options"]), _json, max_size=5),
    st.fixed_dictionaries({"messages": st.lists(_json | _message, max_size=20)}),
    st.fixed_dictionaries({"system": _json, "prompt": _json}),
)


def build(examples: int, tried: Counter[str]) -> dict[str, Callable[[], None]]:
    """The properties as zero-argument callables running ``examples`` inputs each; ``tried`` counts inputs."""
    config = settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @config
    @given(_text, st.sampled_from(SHINGLES), st.booleans())
    def fingerprint_properties(text: str, shingle: int, normalize: bool) -> None:
        tried["fingerprint"] += 1
        expected_units = len(TOKEN_RE.findall(text.lower()))
        try:
            fps = fingerprint(text, shingle, normalize)
        except ValueError:
            assert expected_units == 0
            return
        assert fps.unit_count == expected_units
        assert list(fps.windows) == windows_for(expected_units)
        assert all(0 <= f < 2**64 for f in fps.fingerprints)
        assert fingerprint(text, shingle, normalize) == fps  # deterministic
        longer = fingerprint(text + " tail words 42 , end", shingle, normalize)
        prefix = dict(zip(fps.windows, fps.fingerprints))
        for window, fp in zip(longer.windows, longer.fingerprints):
            if window in prefix and window <= expected_units:
                assert prefix[window] == fp, window

    @config
    @given(_request)
    def canonical_properties(request: dict) -> None:
        tried["canonical_text"] += 1
        text = canonical_text(request)
        assert isinstance(text, str)
        messages = request.get("messages")
        if isinstance(messages, list) and all(
            isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages
        ):
            assert text == "".join(f"{m['role']}: {m['content']}\n" for m in messages)

    @config
    @given(
        st.text(alphabet=st.characters(codec=None, categories=None), max_size=300) | st.just("\ud800" * 5),
        st.integers(0, 2000),
    )
    def cap_properties(text: str, cap: int) -> None:
        tried["within_cap"] += 1
        assert within_cap(text, cap) == (len(text.encode("utf-8", "surrogatepass")) <= cap)

    return {"fingerprint": fingerprint_properties, "canonical_text": canonical_properties, "within_cap": cap_properties}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    p.add_argument("--examples", type=int, default=20_000, help="inputs per property")
    args = p.parse_args(argv)
    tried: Counter[str] = Counter()
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name, prop in build(args.examples, tried).items():
        try:
            prop()
        except Exception as exc:  # noqa: BLE001 - a falsified property: report it, keep fuzzing the others
            failures[name] = f"{type(exc).__name__}: {exc}"[:500]
    print(
        json.dumps(
            {
                "benchmark": "fuzz",
                "inputs_tried": dict(tried),
                "inputs_tried_total": sum(tried.values()),
                "failures": failures,
                "seconds": round(time.perf_counter() - started, 1),
                "engine": "hypothesis",
            }
        )
    )


if __name__ == "__main__":
    main()
