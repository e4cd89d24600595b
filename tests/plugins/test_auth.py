"""The ``auth`` plugin in process: where keys are accepted, which routes need one, the identity
it hands to later plugins, constant-time comparison, the start-up warning, OpenAPI, and that a
key never shows in a log line or an error body."""

from __future__ import annotations

import contextlib
import hashlib
import logging

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import documented, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError
from ddx_llm.factory import create_app
from ddx_llm.plugins.auth import AuthMiddleware, AuthSettings, Unauthorized
from ddx_llm.plugins.auth import log_redaction as access_log
from ddx_llm.plugins.auth.keys import KeyRing
from ddx_llm.plugins.auth.log_redaction import RedactSecrets

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}]}
KEY, OTHER_KEY = "sk-live-0123456789abcdef", "sk-live-fedcba9876543210"
WRONG = "sk-wrong-5555555555555555"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class WhoAmI:
    """Test plugin: ``/whoami`` answers the identity and request id the plugins put in state."""

    @hookimpl
    def ddx_llm_routes(self):
        async def whoami(request: Request) -> JSONResponse:
            return JSONResponse({"client_id": getattr(request.state, "client_id", None)})

        return [Route("/whoami", whoami, methods=["GET", "POST"])]


PROBE = (("whoami", WhoAmI()),)


@pytest.fixture
def keyed(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_API_KEYS", f"{KEY}, {OTHER_KEY}")
    return conf_dir


@pytest.fixture
async def client(keyed):
    async with running_app(keyed, PROBE) as (_, client):
        yield client


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"X-API-Key": KEY}},
        {"headers": {"Authorization": f"Bearer {KEY}"}},
        {"headers": {"authorization": f"bearer   {KEY}"}},
        {"params": {"api_key": KEY}},
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase", "query"],
)
async def test_a_valid_key_is_accepted_in_every_place(client, how):
    response = await client.post(CHAT, json=BODY, **how)
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


async def test_missing_key_is_401_with_challenge(client):
    response = await client.post(CHAT, json=BODY)
    assert response.status_code == 401
    assert set(documented(response.json())) == {"code", "message"}
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="ddx-llm"'


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"X-API-Key": WRONG}},
        {"headers": {"Authorization": f"Bearer {WRONG}"}},
        {"params": {"api_key": WRONG}},
        {"headers": {"X-API-Key": KEY + "x"}},
        {"headers": {"X-API-Key": KEY[:-1]}},
    ],
    ids=["header", "bearer", "query", "longer", "shorter"],
)
async def test_wrong_key_is_401_invalid_token(client, how):
    response = await client.post(CHAT, json=BODY, **how)
    assert response.status_code == 401
    assert documented(response.json()) == {"code": "unauthorized", "message": "invalid API key"}
    assert response.headers["www-authenticate"] == 'Bearer realm="ddx-llm", error="invalid_token"'


async def test_other_schemes_and_empty_values_count_as_missing(client):
    for headers in ({"Authorization": f"Basic {KEY}"}, {"X-API-Key": ""}, {"Authorization": ""}):
        response = await client.post(CHAT, json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="ddx-llm"'


async def test_x_api_key_takes_precedence_over_bearer(client):
    response = await client.post(
        CHAT, json=BODY, headers={"X-API-Key": WRONG, "Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 401


async def test_both_protected_routes_need_a_key(client):
    load = {"model_id": "mlx-community/Qwen3-4B-Instruct-2507-4bit"}
    assert (await client.post("/v1/models/load", json=load)).status_code == 401
    authorized = await client.post("/v1/models/load", json=load, headers={"X-API-Key": KEY})
    assert authorized.json()["code"] == "model_not_found"  # past auth: not in real-model mode


@pytest.mark.parametrize(
    "path",
    ["/health", "/healthz", "/readyz", "/v1/models", "/v1/models/current", "/openapi.json"],
)
async def test_open_routes_need_no_key(client, path):
    assert (await client.get(path)).status_code == 200


async def test_metrics_route_is_open(client):
    # 404 when the metrics plugin is not built yet; never 401.
    assert (await client.get("/metrics")).status_code != 401


async def test_options_is_never_refused(client):
    response = await client.options(CHAT)  # not a CORS preflight: no Origin
    assert response.status_code == 405
    preflight = await client.options(
        CHAT,
        headers={"Origin": "http://localhost:3100", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200


async def test_identity_is_a_short_hash_never_the_key(client):
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert response.json() == {"client_id": "key-" + sha(OTHER_KEY)[:8]}
    # A wrong key on an open route: no identity, no refusal; nothing left from the last request.
    response = await client.get("/whoami", headers={"X-API-Key": WRONG})
    assert response.json() == {"client_id": None}
    assert (await client.get("/whoami")).json() == {"client_id": None}


async def test_named_digests_are_keys_and_give_their_name(conf_dir):
    write_conf(conf_dir, {"auth": {"api_key_digests": {"alice": f"sha256:{sha(KEY)}"}}})
    async with running_app(conf_dir, PROBE) as (_, client):
        assert (await client.post(CHAT, json=BODY)).status_code == 401
        response = await client.post("/whoami", headers={"X-API-Key": KEY})
        assert response.json() == {"client_id": "alice"}
        assert (await client.post(CHAT, json=BODY, params={"api_key": KEY})).status_code == 200


async def test_keys_from_conf_and_env_overrides_conf(conf_dir, monkeypatch):
    write_conf(conf_dir, {"auth": {"api_keys": [KEY]}})
    async with running_app(conf_dir) as (_, client):
        assert (await client.post(CHAT, json=BODY, headers={"X-API-Key": KEY})).status_code == 200
    monkeypatch.setenv("DDX_LLM_API_KEYS", OTHER_KEY)
    async with running_app(conf_dir) as (_, client):
        assert (await client.post(CHAT, json=BODY, headers={"X-API-Key": KEY})).status_code == 401
        ok = await client.post(CHAT, json=BODY, headers={"X-API-Key": OTHER_KEY})
        assert ok.status_code == 200


async def test_rules_protect_routes_beyond_those_that_declare_it(keyed, monkeypatch):
    monkeypatch.setenv("DDX_LLM_AUTH_PROTECTED", "GET /v1/models*, /whoami")
    async with running_app(keyed, PROBE) as (_, client):
        assert (await client.post(CHAT, json=BODY)).status_code == 401  # declared protected
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/v1/models/current")).status_code == 401
        assert (await client.post("/whoami")).status_code == 401  # no method: every method
        assert (await client.get("/health")).status_code == 200
        ok = await client.get("/v1/models", headers={"X-API-Key": KEY})
        assert ok.status_code == 200


async def test_rules_match_the_path_below_root_path():
    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])

    rules = AuthSettings(auth_protected=[f"POST {CHAT}"]).rules()
    middleware = AuthMiddleware(inner, KeyRing.build([KEY], {}), rules)
    scope = {"type": "http", "method": "POST", "headers": [], "query_string": b""}
    mounted = {**scope, "root_path": "/api", "path": "/api" + CHAT}
    with pytest.raises(Unauthorized):
        await middleware(mounted, None, None)
    await middleware({**scope, "root_path": "/api", "path": "/api/health"}, None, None)
    await middleware({**scope, "path": CHAT, "headers": [(b"x-api-key", KEY.encode())]}, None, None)
    assert reached == ["/api/health", CHAT]


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("DDX_LLM_AUTH_PROTECTED", "FETCH /v1/x", "DDX_LLM_AUTH_PROTECTED"),
        ("DDX_LLM_AUTH_PROTECTED", "v1/chat", "DDX_LLM_AUTH_PROTECTED"),
        ("DDX_LLM_API_KEYS", "has space", "DDX_LLM_API_KEYS"),
        ("DDX_LLM_API_KEY_DIGESTS", '{"bob": "abc"}', "DDX_LLM_API_KEY_DIGESTS"),
        ("DDX_LLM_API_KEY_DIGESTS", '{"no spaces": "' + "0" * 64 + '"}', "key name"),
    ],
)
async def test_bad_settings_stop_start_up_without_echoing_keys(
    conf_dir, monkeypatch, env, value, needle
):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as raised:
        async with running_app(conf_dir):
            pass
    assert needle in str(raised.value)
    if env == "DDX_LLM_API_KEYS":
        assert "has space" not in str(raised.value)


# --- constant-time comparison ------------------------------------------------------------


RING_KEYS = [f"sk-k{i}-0123456789abcdef" for i in range(4)]


def poisoned_ring(position: int) -> KeyRing:
    """The ring of RING_KEYS with the digest at ``position`` stored as its hex text: a str,
    which ``hmac.compare_digest`` refuses to compare with the presented key's bytes
    (TypeError).  A lookup through this ring raises exactly when it compares that entry."""
    entries = list(KeyRing.build(RING_KEYS, {}).entries)
    stored, identity = entries[position]
    entries[position] = (stored.hex(), identity)
    return KeyRing(tuple(entries))


@pytest.mark.parametrize("position", range(len(RING_KEYS)))
@pytest.mark.parametrize(
    "presented", [RING_KEYS[0], RING_KEYS[-1], WRONG], ids=["first", "last", "wrong"]
)
async def test_every_stored_digest_is_compared_on_each_request(presented, position):
    """Whichever key a request presents (the first entry, the last, none), its lookup reaches
    the poisoned entry wherever it sits — past a match too — and compares it with
    ``hmac.compare_digest``: an early exit would never reach it, a plain ``==`` would quietly
    find it unequal."""
    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])

    rules = AuthSettings(auth_protected=[f"POST {CHAT}"]).rules()
    key = [(b"x-api-key", presented.encode())]
    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": key, "query_string": b""}
    with pytest.raises(TypeError, match="bytes-like object"):  # compare_digest refuses a str
        await AuthMiddleware(inner, poisoned_ring(position), rules)(scope, None, None)
    assert reached == []
    healthy = AuthMiddleware(inner, KeyRing.build(RING_KEYS, {}), rules)  # the same, unpoisoned
    if presented == WRONG:
        with pytest.raises(Unauthorized):
            await healthy(scope, None, None)
    else:
        await healthy(scope, None, None)
        assert reached == [CHAT]


async def test_configured_keys_are_hashed_once_when_the_app_is_built(keyed):
    assert isinstance(create_app(keyed).context.state("auth").keyring, KeyRing)  # before serving
    async with running_app(keyed) as (app, client):
        ring = app.context.state("auth").keyring
        for _ in range(3):
            ok = await client.post(CHAT, json=BODY, headers={"X-API-Key": KEY})
            assert ok.status_code == 200
        await client.get("/openapi.json")
        assert app.context.state("auth").keyring is ring  # the requests used that one ring
    assert {identity for _, identity in ring.entries} == {
        "key-" + sha(KEY)[:8],
        "key-" + sha(OTHER_KEY)[:8],
    }


def test_keyring_hashes_once_and_dedupes():
    ring = KeyRing.build([KEY, KEY, OTHER_KEY], {"alice": sha(KEY).upper()})
    assert len(ring) == 2
    assert all(len(stored) == 32 for stored, _ in ring.entries)  # digests, not keys
    assert KEY.encode() not in repr(ring).encode()
    assert ring.identify(KEY) == "alice"
    assert ring.identify(OTHER_KEY) == "key-" + sha(OTHER_KEY)[:8]
    assert ring.identify(WRONG) is None
    assert not KeyRing.build([], {})


# --- the key stays secret --------------------------------------------------------------


async def test_keys_never_reach_logs_or_error_bodies(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = [KEY, WRONG]
    async with running_app(keyed, PROBE) as (_, client):
        bodies = []
        for secret in secrets:
            for how in (
                {"headers": {"X-API-Key": secret}},
                {"headers": {"Authorization": f"Bearer {secret}"}},
                {"params": {"api_key": secret}},
            ):
                for method, path, body in (
                    ("POST", CHAT, BODY),
                    ("POST", CHAT, {"messages": "not a list"}),
                    ("GET", "/nope", None),
                    ("GET", "/whoami", None),
                ):
                    response = await client.request(method, path, json=body, **how)
                    bodies.append(response.text + str(response.headers))
    assert any("unauthorized" in body for body in bodies)
    # Every server-side record (the test client's own httpx lines are not the server's).
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "ddx_llm.errors" for r in server)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in server)
    for secret in secrets:
        assert secret not in logged
        assert all(secret not in body for body in bodies)


# --- no keys: open, with a warning --------------------------------------------------------


async def test_without_keys_requests_pass_and_start_up_warns(conf_dir, caplog):
    async with running_app(conf_dir, PROBE) as (_, client):
        assert (await client.post(CHAT, json=BODY)).status_code == 200
        assert (await client.get("/whoami", headers={"X-API-Key": KEY})).json() == {
            "client_id": None
        }
    warnings = [r for r in caplog.records if r.name == "ddx_llm.plugins.auth"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "DDX_LLM_API_KEYS" in warnings[0].getMessage()


@pytest.mark.parametrize("env", ["prod", "PROD", "production"])
def test_without_keys_in_prod_the_app_is_not_built(conf_dir, monkeypatch, env):
    """Refused while the app is built (no lifespan needed): ``ddx-llm serve`` and ``check``
    exit 2 before anything listens.  One line naming both ways out."""
    monkeypatch.setenv("DDX_LLM_ENV", env)
    with pytest.raises(ConfigError) as raised:
        create_app(conf_dir)
    message = str(raised.value)
    assert "\n" not in message
    for needle in ("no API key", "DDX_LLM_API_KEYS", "allow_no_auth", "DDX_LLM_ALLOW_NO_AUTH"):
        assert needle in message
    assert "POST /v1/chat/completions" in message


async def test_prod_without_keys_starts_when_the_deployment_says_so(conf_dir, monkeypatch, caplog):
    monkeypatch.setenv("DDX_LLM_ENV", "prod")
    monkeypatch.setenv("DDX_LLM_ALLOW_NO_AUTH", "1")
    async with running_app(conf_dir) as (_, client):
        assert (await client.post(CHAT, json=BODY)).status_code == 200
    warnings = [r for r in caplog.records if r.name == "ddx_llm.plugins.auth"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "off in production" in warnings[0].getMessage()
    write_conf(conf_dir, {"auth": {"allow_no_auth": True}})  # the same, said in the conf
    monkeypatch.delenv("DDX_LLM_ALLOW_NO_AUTH")
    assert create_app(conf_dir).context.state("auth").allow_no_auth


async def test_prod_with_keys_or_digests_starts_as_usual(conf_dir, monkeypatch):
    monkeypatch.setenv("DDX_LLM_ENV", "prod")
    write_conf(conf_dir, {"auth": {"api_key_digests": {"alice": sha(KEY)}}})
    async with running_app(conf_dir) as (_, client):
        assert (await client.post(CHAT, json=BODY)).status_code == 401
        assert (await client.post(CHAT, json=BODY, headers={"X-API-Key": KEY})).status_code == 200


async def test_with_keys_start_up_logs_the_count_not_the_keys(keyed, caplog):
    caplog.set_level(logging.INFO)
    async with running_app(keyed):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "ddx_llm.plugins.auth"]
    assert len(lines) == 1
    # every protected route, in route order (the core may add protected routes after these)
    prefix = "auth: 2 API key(s); protected routes: POST /v1/models/load, POST /v1/chat/completions"
    assert lines[0].startswith(prefix)
    assert KEY not in lines[0] and OTHER_KEY not in lines[0]


# --- OpenAPI and disabling --------------------------------------------------------------


async def test_openapi_documents_the_schemes_on_protected_operations(client):
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
        "HTTPBearer": {"type": "http", "scheme": "bearer"},
    }
    for path in (CHAT, "/v1/models/load"):
        operation = document["paths"][path]["post"]
        schemes = [{"APIKeyHeader": []}, {"APIKeyQuery": []}, {"HTTPBearer": []}]
        assert operation["security"] == schemes
        assert "401" in operation["responses"]
    for path in ("/health", "/v1/models", "/v1/models/current"):
        assert "security" not in document["paths"][path]["get"]
    from openapi_spec_validator import validate as validate_spec

    validate_spec(document)


async def test_disabled_by_name(keyed):
    write_conf(keyed, {"core": {"disabled_plugins": ["auth"]}})
    async with running_app(keyed, PROBE) as (app, client):
        assert "auth" not in [spec.name for spec in app.context.middleware]
        assert (await client.post(CHAT, json=BODY)).status_code == 200
        document = (await client.get("/openapi.json")).json()
        assert "securitySchemes" not in document.get("components", {})


# --- Hypercorn's access log ---------------------------------------------------------------


def access_line(fmt: str, path: str, query: bytes, headers: list, env: dict, monkeypatch) -> str:
    """Format one access-log line exactly as Hypercorn does, through the installed filter."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return access_lines(fmt, [(path, query, headers)], monkeypatch)[0]


def access_lines(fmt: str, requests: list[tuple[str, bytes, list]], monkeypatch) -> list[str]:
    """Format one access-log line per ``(path, query, headers)`` exactly as Hypercorn does,
    through the installed filter."""
    from hypercorn.config import Config
    from hypercorn.logging import Logger

    shared = logging.getLogger("hypercorn.access")  # Hypercorn reconfigures it: restore after
    monkeypatch.setattr(shared, "handlers", list(shared.handlers))
    monkeypatch.setattr(shared, "propagate", shared.propagate)
    config = Config()
    config.accesslog, config.access_log_format = "-", fmt
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    hypercorn_logger = Logger(config)
    hypercorn_logger.access_logger.handlers = [Collect()]
    access_log.install()
    response = {"status": 200, "headers": [(b"x-request-id", b"rid-1")]}
    import anyio

    async def log_all() -> None:
        for path, query, headers in requests:
            request = {
                "type": "http", "method": "GET", "path": path, "query_string": query,
                "headers": headers, "http_version": "1.1", "scheme": "http",
                "client": ("127.0.0.1", 5000),
            }  # fmt: skip
            await hypercorn_logger.access(request, response, 0.01)

    anyio.run(log_all)
    assert len(lines) == len(requests)
    return lines


def test_access_log_redacts_keys_in_any_format(monkeypatch):
    fmt = (
        '"%(R)s" %(Uq)s q=%(q)s ref=%(f)s k=%({x-api-key}i)s a=%({authorization}i)s '
        "e=%({ddx_llm_api_keys}e)s rid=%({x-request-id}o)s"
    )
    line = access_line(
        fmt,
        "/v1/models",
        f"x=1&api_key={KEY}&api%5Fkey={OTHER_KEY}".encode(),
        [
            (b"x-api-key", WRONG.encode()),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"referer", f"http://localhost:3100/?api_key={OTHER_KEY}".encode()),
        ],
        {"DDX_LLM_API_KEYS": f"{KEY},{OTHER_KEY}"},
        monkeypatch,
    )
    for secret in (KEY, OTHER_KEY, WRONG):
        assert secret not in line
    assert '"GET /v1/models?x=1&api_key=[redacted]&api%5Fkey=[redacted] 1.1"' in line
    assert "k=[redacted] a=[redacted] e=[redacted] rid=rid-1" in line


def test_access_log_filter_leaves_other_lines_alone(monkeypatch):
    line = access_line('"%(R)s" %(s)s', "/health", b"verbose=1", [], {}, monkeypatch)
    assert line == '"GET /health?verbose=1 1.1" 200'
    record = logging.LogRecord("x", logging.INFO, "f", 1, "GET /a?api_key=%s", (KEY,), None)
    assert RedactSecrets().filter(record)
    assert record.getMessage() == "GET /a?api_key=[redacted]"
    assert access_log.install() is access_log.install()


# --- the api_key query parameter: one notion for authentication and redaction ------------

TRICKY_KEY = "Kq;9?x=Z~w+y/a-b_c.d*e'f!g%h&i#j"
"""A configured key holding every character a query treats specially (``;`` ``?`` ``=`` ``+``
``%`` ``&`` ``#``): sent in a query it must be percent-encoded in part, differently each time."""
MUST_ESCAPE = set("&#%+ ")
"""Characters that cannot travel raw in a query value (``+`` would decode to a space)."""


def encode(text: str, rng, *, escape_share: float) -> str:
    """``text`` with each character percent-encoded (hex in either case) with probability
    ``escape_share``, or always when it cannot travel raw."""
    out = []
    for char in text:
        if char in MUST_ESCAPE or rng.random() < escape_share:
            escaped = f"%{ord(char):02X}"
            out.append(escaped.lower() if rng.random() < 0.5 else escaped)
        else:
            out.append(char)
    return "".join(out)


def random_query(rng) -> tuple[str, str]:
    """A query string holding the key somewhere, and the raw value that carries it: the name
    ``api_key`` in some spelling (percent-encoded in part, ``API_KEY``, after a ``;``),
    decoy fields, repeated and empty ``api_key`` fields, stray separators."""
    raw_value = encode(TRICKY_KEY, rng, escape_share=rng.choice([0, 0.2, 0.6, 1]))
    name = encode("api_key", rng, escape_share=rng.choice([0, 0.3, 0.7, 1]))
    if rng.random() < 0.1:
        name = rng.choice(["API_KEY", "Api_Key", "%41PI%5FKEY"])  # not the parameter: 401
    decoys = ["x=1", "api_key=", "api_key", "", "flag", "api_keyx=no", "q=a?b=c", "a=b;c=d"]
    fields = rng.sample(decoys, rng.randint(0, 4))
    field = f"{name}={raw_value}"
    if rng.random() < 0.1:
        field = "x=1;" + field  # ';' is no separator for parse_qsl: not the parameter
    fields.insert(rng.randint(0, len(fields)), field)
    if rng.random() < 0.2:  # a second key field after it (authentication takes the first)
        second = encode("api_key", rng, escape_share=0.5), encode(WRONG, rng, escape_share=0.3)
        fields.append("=".join(second))
    return "&".join(fields), raw_value


def leaks(line: str, secret: str, raw: str) -> bool:
    from urllib.parse import unquote, unquote_plus

    return any(secret in text for text in (line, unquote(line), unquote_plus(line))) or raw in line


def test_query_key_fields_parse_exactly_as_parse_qsl():
    """The parameter authentication reads is ``parse_qsl``'s: on random queries, the non-empty
    values :func:`query_key_fields` yields are those ``parse_qsl`` gives for ``api_key``, and
    each span holds exactly the raw text of its value."""
    import random
    from urllib.parse import parse_qsl, unquote_plus

    from ddx_llm.plugins.auth.keys import query_key_fields

    rng = random.Random(11)
    for _ in range(2000):
        query, _ = random_query(rng)
        fields = list(query_key_fields(query))
        expected = [value for name, value in parse_qsl(query) if name == "api_key"]
        assert [value for _, _, value in fields if value] == expected, query
        assert all(unquote_plus(query[start:end]) == value for start, end, value in fields)


def test_no_encoding_of_a_query_key_authenticates_without_being_redacted(monkeypatch):
    """Property over 1,500 random queries: whatever spelling of ``api_key`` and of the key the
    real middleware accepts, Hypercorn's real access logger (formats ``%(R)s``, ``%(Uq)s``,
    ``%(q)s``, the ``Referer``) writes no trace of the key — neither in clear, nor
    percent-encoded, nor the raw value it travelled in.  Spellings that are not the parameter
    (``API_KEY``, after a ``;``) are refused, and redacted all the same."""
    import random

    import anyio

    rng = random.Random(7)
    queries = [random_query(rng) for _ in range(1500)]
    identity = "key-" + sha(TRICKY_KEY)[:8]

    async def authenticate_all() -> list[bool]:
        reached = []

        async def inner(scope, receive, send):
            reached.append(scope["state"].get("client_id"))

        middleware = AuthMiddleware(inner, KeyRing.build([TRICKY_KEY], {}), ())
        accepted = []
        for query, _ in queries:
            reached.clear()
            scope = {
                "type": "http", "method": "POST", "path": CHAT, "headers": [],
                "query_string": query.encode(),
            }  # fmt: skip
            with contextlib.suppress(Unauthorized):
                await middleware(scope, None, None)
            accepted.append(reached == [identity])
        return accepted

    accepted = anyio.run(authenticate_all)
    requests = [
        (CHAT, query.encode(), [(b"referer", f"http://localhost:3100/page?{query}".encode())])
        for query, _ in queries
    ]
    lines = access_lines('"%(R)s" %(Uq)s q=%(q)s ref=%(f)s %(s)s', requests, monkeypatch)
    assert 1000 < sum(accepted) < 1500  # most spellings authenticate; the decoys do not
    for (query, raw), line in zip(queries, lines, strict=True):
        assert not leaks(line, TRICKY_KEY, raw), (query, line)
        assert line.endswith(" 200") and "[redacted]" in line
