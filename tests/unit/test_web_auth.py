"""The `/admin/*` bearer check: exactly `Bearer <the token>` matches; nothing blank ever does."""

from __future__ import annotations

import pytest

from ragvisor.web.auth import bearer_matches

TOKEN = "s3cret-Token_0123456789"


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"  Bearer {TOKEN}  ",
     f"Bearer   {TOKEN}", f"Bearer {TOKEN}\t"],
)  # fmt: skip
def test_the_token_after_bearer_matches(header):
    """Scheme in any case, spaces around the value or the token: still the token."""
    assert bearer_matches(header, TOKEN)


@pytest.mark.parametrize(
    "header",
    [None, "", " ", "Bearer", "Bearer ", "Bearer    ", "Bearer \t ", TOKEN, f"Basic {TOKEN}",
     f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN} extra", f"Bearer{TOKEN}",
     "Bearer café", "Bearer caf\u00c3\u00a9", "Bearer \u2603", "Bearer \ud800"],
)  # fmt: skip
def test_anything_else_is_refused_without_raising(header):
    """Missing, blank, other schemes, near misses and non-ASCII tokens are all just "no"."""
    assert not bearer_matches(header, TOKEN)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer    "])
def test_an_empty_expected_token_matches_nothing(header):
    """Even if an empty token reached the check, a blank header would not get through."""
    assert not bearer_matches(header, "")
