"""Schemathesis hooks of tests/openapi_fuzz.rs (loaded through SCHEMATHESIS_HOOKS=hooks).

The admin API accepts any SQLite directory as a shard's database location, absolute or with
`..`, and provisioning creates tenant files there. The fuzzer's shards are kept inside the
test's working directory: a SQLite URL it generated that leaves it is replaced, before the
request is sent, by another valid one that does not. Nothing else is changed.
"""

import schemathesis


def _contained(url):
    if not isinstance(url, str) or not url.startswith("sqlite://"):
        return url
    path = url[len("sqlite://"):]
    if path.startswith("/") or ".." in path.split("/"):
        return "sqlite://fuzz-shards"
    return url


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if isinstance(case.body, dict) and "database_url" in case.body:
        case.body["database_url"] = _contained(case.body["database_url"])
