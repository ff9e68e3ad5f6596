"""Shared by the tests of jobs/submission/: Hypothesis strategies for valid URLs and for garbage."""

from __future__ import annotations

import string

from hypothesis import strategies as st

_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_HOST = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.sampled_from(["bücher.example", "例え.テスト", "xn--bcher-kva.example"]),
)
_PATH_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/"


@st.composite
def valid_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(_HOST)
    port = draw(st.none() | st.integers(1, 65535))
    path = draw(st.text(_PATH_CHARS, max_size=40))
    query = draw(st.none() | st.text(_PATH_CHARS + "?", max_size=20))
    url = f"{scheme}://{host}" + (f":{port}" if port else "") + "/" + path
    return url + (f"?{query}" if query is not None else "")


garbage = st.one_of(
    st.text(max_size=30).filter(lambda text: "://" not in text),
    st.builds(lambda url, scheme: scheme + url[url.index(":") :], valid_urls(), st.sampled_from(["ftp", "file", "ws"])),
    # Whitespace inside a URL is an error; around it, it is trimmed (so the tail must not be blank).
    st.builds(lambda url, tail: f"{url} {tail}", valid_urls(), st.text(min_size=1, max_size=5).filter(str.strip)),
    st.builds(lambda url: url + "x" * 2048, valid_urls()),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
