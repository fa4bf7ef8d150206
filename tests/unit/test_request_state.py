"""requestState tokens: intact ones verify, any edit or foreign key is refused."""

from __future__ import annotations

import pytest

from gateway.transports.stateless.request_state import (
    BadRequestState,
    RequestState,
    StateSigner,
    binding_of,
)


def test_a_token_verifies_to_what_was_signed() -> None:
    signer = StateSigner()
    state = RequestState("abc123", 2, binding_of("tools/call", "t", "keyhash"))
    assert signer.verify(signer.sign(state)) == state


def test_bindings_differ_by_method_target_and_key() -> None:
    base = binding_of("tools/call", "t", "k")
    assert base != binding_of("prompts/get", "t", "k")
    assert base != binding_of("tools/call", "u", "k")
    assert base != binding_of("tools/call", "t", "other")
    assert base == binding_of("tools/call", "t", "k")


@pytest.mark.parametrize("edit", [
    lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),   # the MAC
    lambda t: "A" + t[1:],                                # the payload
    lambda t: t.replace(".", ""),                         # the shape
    lambda t: t + ".x",
    lambda t: "",
])
def test_edited_tokens_are_refused(edit) -> None:  # type: ignore[no-untyped-def]
    signer = StateSigner()
    token = signer.sign(RequestState("abc123", 1, "b"))
    with pytest.raises(BadRequestState):
        signer.verify(edit(token))


def test_another_gateways_token_is_refused() -> None:
    token = StateSigner().sign(RequestState("abc123", 1, "b"))
    with pytest.raises(BadRequestState, match="integrity"):
        StateSigner().verify(token)


def test_non_strings_are_refused() -> None:
    with pytest.raises(BadRequestState):
        StateSigner().verify(12345)
