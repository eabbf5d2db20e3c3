"""A :class:`~wa_agent.stores.SessionStore` on Redis, for several processes or hosts.

Needs the ``redis`` extra (``pip install 'wa-agent-host[redis]'``). Every step that must be atomic
runs as one Lua script on the server, so dedupe, the inbox, delivery states and leases hold
across every process sharing the server:

* ``add_inbound``: per item, ``SET mark NX PX ttl`` and the enqueue in one script;
* leases: ``SET NX PX`` semantics with compare-and-renew / compare-and-delete by owner;
* ``advance_status``: the rank check and the write in one script;
* ``complete``: the removal from the inbox and the history append in one script.

Scripts that redis-py may resend after a dropped connection carry a token, so a resend of a
call that did reach the server answers the same as the first attempt (``add_inbound`` and
``seen``) or does nothing twice (``complete``).

Connections: the store keeps at most ``max_connections`` connections to the server and
queues callers beyond that (for up to ``pool_timeout`` seconds) instead of failing them, so
a burst of several hundred webhooks or workers at once is served, not answered with errors.

Durability is the server's: use ``appendonly yes`` (``appendfsync everysec`` or ``always``)
where acknowledged messages must survive a Redis restart. The store checks this when it
opens (``CONFIG GET appendonly``/``save``, else ``INFO persistence``) and warns once per
server without it, or refuses to open with ``persistence="require"``. Keys live under
``{prefix}:i:{interface}:`` and ``{prefix}:lease:``. A standalone server (or a replicated
primary) is expected, not Redis Cluster.

Tested with redis-py 5.0.1 to 8.x (the range ``pyproject.toml`` allows).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..agents import Turn
from ..exceptions import StoreError
from ..secret import Secret
from ._common import STATUS_RANK, check_ttl, from_micros, to_micros, turn_from_json, turn_to_json
from .base import DEFAULT_DEDUPE_TTL, InboxItem

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import EqualJitterBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisSessionStore needs the 'redis' extra: pip install 'wa-agent-host[redis]' "
        "(or pip install redis)"
    ) from exc

__all__ = ["Durability", "RedisSessionStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A resent complete() recognises its first attempt for this long (ms).
_COMPLETE_TOKEN_TTL_MS = 10 * 60 * 1000

#: Connections one store opens to the server at most (callers beyond wait for one).
DEFAULT_MAX_CONNECTIONS = 50
#: Seconds a call waits for a free connection before it raises StoreError.
DEFAULT_POOL_TIMEOUT = 10.0

#: What a Redis server keeps across a restart, as :attr:`RedisSessionStore.durability`
#: reports it: ``"aof"`` (append-only file: nothing acknowledged is lost), ``"snapshots"``
#: (RDB only: what came after the last snapshot is lost), ``"none"`` (nothing is kept),
#: ``"no-aof"`` (no AOF; whether snapshots are taken could not be read), ``"unknown"``
#: (the server refused both ``CONFIG`` and ``INFO``).
Durability = Literal["aof", "snapshots", "none", "no-aof", "unknown"]

# Servers (masked URLs) this process already logged a persistence finding for.
_persistence_logged: set[str] = set()

# KEYS: none. ARGV: base, ttl_ms, token, then 7 per item:
#   id, sender, payload, received_at, attempts, has_progress ("0"/"1"), progress
_ADD_INBOUND = """
local base, ttl, token = ARGV[1], ARGV[2], ARGV[3]
local out, now_seen = {}, {}
for o = 4, #ARGV, 7 do
  local id, sender = ARGV[o], ARGV[o + 1]
  local mark = base .. 'd:' .. id
  local result = 0
  if now_seen[id] then
    result = 0
  elseif redis.call('SET', mark, token, 'NX', 'PX', ttl) then
    local item = base .. 'item:' .. id
    if redis.call('EXISTS', item) == 1 then
      redis.call('SET', mark, '-', 'PX', ttl)  -- still pending from long ago: a duplicate
    else
      local seq = redis.call('INCR', base .. 'seq')
      redis.call('HSET', item, 'sender', sender, 'payload', ARGV[o + 2],
                 'received_at', ARGV[o + 3], 'seq', seq, 'attempts', ARGV[o + 4])
      if ARGV[o + 5] == '1' then redis.call('HSET', item, 'progress', ARGV[o + 6]) end
      redis.call('ZADD', base .. 'inbox', seq, id)
      redis.call('ZADD', base .. 'q:' .. sender, seq, id)
      redis.call('ZADD', base .. 'senders', 'NX', seq, sender)
      result = 1
    end
  elseif redis.call('GET', mark) == token then
    result = 1  -- a resend of this very call, which did reach the server
  end
  now_seen[id] = true
  out[#out + 1] = result
end
return out
"""

# KEYS[1]: the mark. ARGV: token, ttl_ms. Answers 1 if the key was already marked.
_SEEN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return 1
"""

# KEYS[1]: the zset to list (inbox or one sender's queue). ARGV[1]: base.
_PENDING = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[1] .. 'item:' .. id,
                       'sender', 'payload', 'received_at', 'seq', 'attempts', 'progress')
  if v[1] then
    out[#out + 1] = {id, v[1], v[2], v[3], v[4], v[5], v[6]}
  end
end
return out
"""

# KEYS[1]: the item hash. ARGV[1]: progress.
_SAVE_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""

# ARGV: base, sender, token, token_ttl_ms, n, then n item ids, then turn JSON...
# The token makes a retried call (the connection broke after Redis ran it) a no-op.
_COMPLETE = """
local base, sender, token, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[5])
local done = base .. 'done:' .. ARGV[6]
if redis.call('GET', done) == token then return 0 end
redis.call('SET', done, token, 'PX', ARGV[4])
for k = 6, 5 + n do
  local id = ARGV[k]
  local item = base .. 'item:' .. id
  local owner = redis.call('HGET', item, 'sender')
  if owner then
    redis.call('DEL', item)
    redis.call('ZREM', base .. 'inbox', id)
    local q = base .. 'q:' .. owner
    redis.call('ZREM', q, id)
    local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if #head == 0 then
      redis.call('ZREM', base .. 'senders', owner)
    else
      redis.call('ZADD', base .. 'senders', head[2], owner)
    end
  end
end
local hist = base .. 'h:' .. sender
for i = 6 + n, #ARGV, 100 do
  redis.call('RPUSH', hist, unpack(ARGV, i, math.min(i + 99, #ARGV)))
end
return 1
"""

_RANKS = ", ".join(f"{name}={rank}" for name, rank in STATUS_RANK.items())
# KEYS[1]: the status key. ARGV: new status, ttl_ms. Mirrors _common.status_advances.
_ADVANCE_STATUS = (
    "local rank = {"
    + _RANKS
    + "}\n"
    + """
local new = rank[ARGV[1]]
if not new then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == 'failed' or new <= (rank[cur] or 0) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# KEYS[1]: last inbound key. ARGV[1]: microseconds.
_TOUCH = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(ARGV[1]) > tonumber(cur) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS[1]: heartbeat key. ARGV: sender, overwrite ("0"/"1").
_HEARTBEAT = """
if ARGV[2] == '0' then
  local cur = redis.call('GET', KEYS[1])
  if cur then return cur end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# KEYS[1]: lease key. ARGV: owner, ttl_ms.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease keys. ARGV[1]: owner, ARGV[2]: ttl_ms. One 0/1 per key.
_ACQUIRE_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur and cur ~= ARGV[1] then
    out[i] = 0
  else
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  end
end
return out
"""

# KEYS[1]: lease key. ARGV[1]: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SCRIPTS = {
    "add_inbound": _ADD_INBOUND,
    "seen": _SEEN,
    "pending": _PENDING,
    "save_progress": _SAVE_PROGRESS,
    "complete": _COMPLETE,
    "advance_status": _ADVANCE_STATUS,
    "touch": _TOUCH,
    "heartbeat": _HEARTBEAT,
    "acquire": _ACQUIRE,
    "acquire_many": _ACQUIRE_MANY,
    "release": _RELEASE,
}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _read_durability(client: aioredis.Redis) -> tuple[Durability, str]:
    """(durability, detail): from ``CONFIG GET``, else ``INFO persistence``."""
    try:
        aof = await client.config_get("appendonly")
        save = await client.config_get("save")
    except ResponseError as config_refused:  # managed Redis: CONFIG disabled or no ACL
        try:
            info = await client.info("persistence")
        except ResponseError as info_refused:
            return "unknown", f"CONFIG: {config_refused}; INFO: {info_refused}"
        enabled = info.get("aof_enabled")
        if enabled is None:
            return "unknown", f"CONFIG: {config_refused}; INFO persistence has no aof_enabled"
        if _str(enabled) == "1":
            return "aof", "INFO persistence: aof_enabled:1"
        return "no-aof", f"CONFIG refused ({config_refused}); INFO persistence: aof_enabled:0"
    values = {_str(k): _str(v) for d in (aof, save) for k, v in d.items()}
    if values.get("appendonly", "").lower() == "yes":
        return "aof", f"appendonly yes; save {values.get('save', '')!r}"
    schedule = values.get("save", "").strip()
    if schedule:
        return "snapshots", schedule
    return "none", "appendonly no, save ''"


def _mask(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and repr)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<redis url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisSessionStore:
    """Store on a Redis server, shared by every worker and host of a deployment.

    ``url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL (a :class:`~wa_agent.Secret`
    is accepted when it carries a password); ``prefix`` namespaces the keys (several bots
    can share a server); ``dedupe_ttl`` is how long message ids, :meth:`seen` keys and
    delivery states are remembered (the server expires them). ``client`` is an existing
    ``redis.asyncio.Redis`` to borrow instead (it is not closed by :meth:`aclose`).

    At most ``max_connections`` calls talk to the server at once (with a borrowed client,
    the smaller of ``max_connections`` and its pool's own limit, since redis-py's default
    pool raises "Too many connections" instead of waiting); further calls wait in order
    for a free connection, for up to ``pool_timeout`` seconds, then raise
    :class:`~wa_agent.StoreError`. Keep ``max_connections`` times the number of processes
    sharing the server under its ``maxclients`` (10,000 by default).

    ``persistence`` is what :meth:`open` does about a server that would lose acknowledged
    messages on a restart (no ``appendonly yes``): ``"warn"`` (default) logs one WARNING per
    server and process naming the fix; ``"require"`` refuses to open (a
    :class:`~wa_agent.StoreError`), also when the server hides its configuration;
    ``"ignore"`` checks nothing, for a deliberately volatile store. Managed services that
    refuse ``CONFIG`` are checked through ``INFO persistence``; if both are refused, that is
    logged once. :attr:`durability` reports what was found.

    The store opens itself on first use (:meth:`open` checks the server with ``PING``);
    after :meth:`aclose`, call :meth:`open` to use it again. Errors talking to the server
    raise :class:`~wa_agent.StoreError`.
    """

    def __init__(
        self,
        url: str | Secret = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "wa_agent",
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        client: aioredis.Redis | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        persistence: Literal["warn", "require", "ignore"] = "warn",
    ) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        if persistence not in ("warn", "require", "ignore"):
            raise ValueError(
                f"persistence must be 'warn', 'require' or 'ignore', got {persistence!r}"
            )
        self._persistence = persistence
        #: What the server keeps across a restart (see :data:`Durability`), found by
        #: :meth:`open`; ``None`` before that or with ``persistence="ignore"``.
        self.durability: Durability | None = None
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or (max_connections < 1)
        ):
            raise ValueError(
                f"max_connections must be an int of at least 1, got {max_connections!r}"
            )
        if not pool_timeout >= 0:
            raise ValueError(f"pool_timeout must be >= 0 seconds, got {pool_timeout!r}")
        self._max_connections = max_connections
        self._pool_timeout = float(pool_timeout)
        self._slots: asyncio.Semaphore | None = None
        self._others = asyncio.Semaphore(1)  # replaced by open()
        self._slot_count = max_connections
        self._url = Secret(url)
        self._shown_url = "<client>" if client is not None else _mask(self._url.reveal())
        self._prefix = prefix
        self._ttl_ms = _ms(check_ttl("dedupe_ttl", dedupe_ttl))
        self._borrowed = client
        self._client: aioredis.Redis | None = client
        self._scripts: dict[str, Any] = {}
        self._state = "new"
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RedisSessionStore({self._shown_url!r}, prefix={self._prefix!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and ``PING`` the server. Idempotent. Raises :class:`~wa_agent.StoreError`."""
        async with self._open_lock:
            if self._state != "open":
                await self._open()

    async def _open(self) -> None:
        client = self._borrowed
        slots = self._max_connections
        if client is None:
            # A plain pool of max_connections: _call never lets more calls through than
            # that, so it never runs out (a BlockingConnectionPool would wait the same way
            # but costs ~20 us more per call).
            try:
                pool = aioredis.ConnectionPool.from_url(
                    self._url.reveal(),
                    max_connections=self._max_connections,
                    decode_responses=True,
                    socket_connect_timeout=5.0,
                    socket_timeout=10.0,
                    client_name=f"wa_agent:{self._prefix}",
                    # A connection the server dropped (a restart, an idle timeout) is
                    # reopened and the call sent again, up to 3 times within ~1 s; the
                    # scripts' tokens make such a resend answer like the first attempt.
                    retry=Retry(EqualJitterBackoff(cap=0.5, base=0.05), 3),
                    retry_on_error=[RedisConnectionError, RedisTimeoutError],  # redis-py 5
                )
            except ValueError as exc:
                raise ValueError(f"invalid Redis URL {self._shown_url!r}: {exc}") from None
            client = aioredis.Redis.from_pool(pool)
        else:
            # A pool of redis-py's default type raises instead of waiting once it is at its
            # limit: never run more calls at once than it can hold.
            limit = getattr(client.connection_pool, "max_connections", None)
            if isinstance(limit, int) and limit >= 1:
                slots = min(slots, limit)
        try:
            await client.ping()
            if self._persistence != "ignore":
                await self._check_persistence(client)
        except (RedisError, OSError) as exc:
            if self._borrowed is None:
                await client.aclose()
            raise StoreError(f"cannot reach Redis at {self._shown_url}: {exc}") from exc
        except BaseException:
            if self._borrowed is None:
                await client.aclose()
            raise
        self._client = client
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._slots = asyncio.Semaphore(slots)
        # A quarter of the connections is kept for recording webhooks (the ack path): the
        # other calls (answering, bookkeeping) never take more than the rest, so a busy
        # bot's acks never queue behind its reply work.
        self._others = asyncio.Semaphore(max(1, slots - max(1, slots // 4)))
        self._slot_count = slots
        self._state = "open"
        logger.debug("Redis store opened at %s (prefix %s)", self._shown_url, self._prefix)

    async def _check_persistence(self, client: aioredis.Redis) -> None:
        """Find :attr:`durability`; warn, or raise StoreError under ``"require"``."""
        durability, detail = await _read_durability(client)
        self.durability = durability
        url = self._shown_url
        logger.debug("Redis at %s: durability %s (%s)", url, durability, detail)
        if durability == "aof":
            return
        if durability == "unknown":
            if self._persistence == "require":
                raise StoreError(
                    f"Redis at {url} refused CONFIG and INFO ({detail}), so the store cannot "
                    "check that it persists acknowledged messages (persistence='require'). "
                    "Make sure the server runs with appendonly yes, then pass "
                    "persistence='warn'."
                )
            if url not in _persistence_logged:
                _persistence_logged.add(url)
                logger.warning(
                    "could not check whether Redis at %s persists acknowledged messages "
                    "(%s). Without appendonly yes a Redis restart loses messages already "
                    "acknowledged to Meta; make sure your Redis (or its provider) keeps an "
                    "append-only file.",
                    url,
                    detail,
                )
            return
        what = {
            "snapshots": f"only RDB snapshots (save {detail!r}): whatever arrived since the "
            "last snapshot",
            "none": "no append-only file and no snapshots: everything",
            "no-aof": f"no append-only file ({detail}): everything since the last snapshot, if any",
        }[durability]
        problem = (
            f"Redis at {url} keeps {what} is lost when Redis restarts or crashes: messages "
            "already acknowledged to Meta (which will not redeliver them) and the dedupe "
            "marks (redelivered messages would be answered twice)"
        )
        if self._persistence == "require":
            raise StoreError(
                f"{problem}. Refusing to open (persistence='require'): set appendonly yes "
                "(CONFIG SET appendonly yes, and in redis.conf)."
            )
        if url not in _persistence_logged:
            _persistence_logged.add(url)
            logger.warning(
                "%s. Set appendonly yes (CONFIG SET appendonly yes, and in redis.conf), or "
                "pass persistence='ignore' for a deliberately volatile store.",
                problem,
            )

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was borrowed). Idempotent."""
        async with self._open_lock:
            was_open, self._state = self._state == "open", "closed"
            client, self._client = self._client, self._borrowed
            if was_open and self._borrowed is None and client is not None:
                await client.aclose()

    async def _ready(self) -> aioredis.Redis:
        if self._state != "open":
            if self._state == "closed":
                raise RuntimeError("This RedisSessionStore is closed; call open() to use it again.")
            await self.open()
        client = self._client
        if client is None:  # pragma: no cover - open() sets it
            raise RuntimeError("RedisSessionStore has no client")
        return client

    async def _call(
        self, what: str, fn: Callable[[aioredis.Redis], Awaitable[T]], *, ack: bool = False
    ) -> T:
        """Run ``fn`` on a connection of the pool; ``ack``: a call of the webhook's ack path
        (it may use the connections the other calls leave free)."""
        if ack:
            return await self._on_connection(what, fn)
        async with self._others:
            return await self._on_connection(what, fn)

    async def _on_connection(self, what: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        client = await self._ready()
        slots = self._slots
        if slots is None:  # pragma: no cover - open() sets it
            raise RuntimeError("RedisSessionStore has no connection slots")
        if slots.locked():  # every connection is busy: queue for one, within pool_timeout
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise StoreError(
                    f"Redis store at {self._shown_url} could not {what}: no connection came "
                    f"free within pool_timeout={self._pool_timeout:g} s (all "
                    f"max_connections={self._slot_count} busy); raise max_connections or "
                    "pool_timeout, or check the server's latency"
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        try:
            return await fn(client)
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis store at {self._shown_url} could not {what}: {exc}") from exc
        finally:
            slots.release()

    async def _script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, ack: bool = False
    ) -> Any:
        return await self._call(
            name.replace("_", " "),
            lambda _c: self._scripts[name](keys=keys, args=args),
            ack=ack,
        )

    def _base(self, interface: str) -> str:
        return f"{self._prefix}:i:{interface}:"

    # -- inbox and dedupe ---------------------------------------------------------------------
    async def add_inbound(self, interface: str, items: Sequence[InboxItem]) -> list[bool]:
        """Dedupe and enqueue atomically on the server; see :meth:`SessionStore.add_inbound`."""
        if not items:
            return []
        args: list[Any] = [self._base(interface), self._ttl_ms, secrets.token_hex(8)]
        for it in items:
            args += [
                it.id,
                it.sender,
                it.payload,
                repr(float(it.received_at)),
                it.attempts,
                "0" if it.progress is None else "1",
                it.progress or "",
            ]
        result = await self._script("add_inbound", (), args, ack=True)
        return [bool(int(r)) for r in result]

    async def pending(self, interface: str, sender: str | None = None) -> list[InboxItem]:
        """Inbox items of one sender (or all), oldest first."""
        base = self._base(interface)
        key = base + ("inbox" if sender is None else f"q:{sender}")
        rows = await self._script("pending", (key,), (base,))
        return [
            InboxItem(
                id=_str(r[0]),
                sender=_str(r[1]),
                payload=_str(r[2]),
                received_at=float(r[3]),
                seq=int(r[4]),
                attempts=int(r[5]),
                progress=None if r[6] is None else _str(r[6]),
            )
            for r in rows
        ]

    async def pending_senders(self, interface: str) -> list[str]:
        """Senders with at least one item, the one waiting longest first."""
        key = self._base(interface) + "senders"
        rows = await self._call("list senders", lambda c: c.zrange(key, 0, -1))
        return [_str(r) for r in rows]

    async def save_progress(self, interface: str, item_id: str, progress: str) -> None:
        """Store the progress JSON and count one attempt (no-op for an unknown item)."""
        key = self._base(interface) + f"item:{item_id}"
        await self._script("save_progress", (key,), (progress,))

    async def complete(
        self,
        interface: str,
        item_id: str | Sequence[str],
        sender: str,
        turns: Sequence[Turn] = (),
    ) -> None:
        """Remove the item(s) (if present) and append ``turns`` to the history, atomically."""
        ids = [item_id] if isinstance(item_id, str) else list(item_id)
        if not ids:
            raise ValueError("complete() needs at least one item id")
        args: list[Any] = [
            self._base(interface),
            sender,
            secrets.token_hex(8),
            _COMPLETE_TOKEN_TTL_MS,
            len(ids),
            *ids,
        ]
        args += [turn_to_json(t) for t in turns]
        await self._script("complete", (), args)

    async def seen(self, interface: str, key: str) -> bool:
        """``True`` if ``key`` was marked within the TTL; otherwise mark it and answer ``False``."""
        mark = self._base(interface) + f"d:{key}"
        result = await self._script("seen", (mark,), (secrets.token_hex(8), self._ttl_ms))
        return bool(int(result))

    # -- statuses -----------------------------------------------------------------------------
    async def advance_status(self, interface: str, message_id: str, status: str) -> bool:
        """Move the delivery state forward only; see :meth:`SessionStore.advance_status`."""
        key = self._base(interface) + f"st:{message_id}"
        result = await self._script("advance_status", (key,), (status, self._ttl_ms))
        return bool(int(result))

    async def get_status(self, interface: str, message_id: str) -> str | None:
        """The delivery state last recorded (within the TTL), or ``None``."""
        key = self._base(interface) + f"st:{message_id}"
        value = await self._call("read a status", lambda c: c.get(key))
        return None if value is None else _str(value)

    # -- history and window -------------------------------------------------------------------
    async def get_history(
        self, interface: str, sender: str, limit: int | None = None
    ) -> list[Turn]:
        """The sender's turns, oldest first (the last ``limit`` if given)."""
        if limit is not None and limit <= 0:
            return []
        key = self._base(interface) + f"h:{sender}"
        start = 0 if limit is None else -limit
        rows = await self._call("read history", lambda c: c.lrange(key, start, -1))
        try:
            return [turn_from_json(r) for r in rows]
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"corrupt history entry under {key!r}: {exc}") from exc

    async def append_history(self, interface: str, sender: str, turns: Sequence[Turn]) -> None:
        """Append turns to the sender's history."""
        if not turns:
            return
        key = self._base(interface) + f"h:{sender}"
        values = [turn_to_json(t) for t in turns]
        await self._call("append history", lambda c: c.rpush(key, *values))

    async def clear_history(self, interface: str, sender: str) -> None:
        """Forget this sender's history only."""
        key = self._base(interface) + f"h:{sender}"
        await self._call("clear history", lambda c: c.delete(key))

    async def touch_inbound(self, interface: str, sender: str, at: datetime) -> None:
        """Record an inbound time, kept only if later than the stored one."""
        key = self._base(interface) + f"li:{sender}"
        await self._script("touch", (key,), (to_micros(at),))

    async def last_inbound(self, interface: str, sender: str) -> datetime | None:
        """The latest inbound time (aware UTC), or ``None``."""
        key = self._base(interface) + f"li:{sender}"
        value = await self._call("read the last inbound time", lambda c: c.get(key))
        return None if value is None else from_micros(int(value))

    # -- heartbeat and leases -----------------------------------------------------------------
    async def get_heartbeat_recipient(self, interface: str) -> str | None:
        """The persisted heartbeat recipient, or ``None``."""
        key = self._base(interface) + "hb"
        value = await self._call("read the heartbeat recipient", lambda c: c.get(key))
        return None if value is None else _str(value)

    async def set_heartbeat_recipient(
        self, interface: str, sender: str, *, overwrite: bool = False
    ) -> str:
        """Set the recipient unless one is set (or ``overwrite``); answer the one in force."""
        key = self._base(interface) + "hb"
        value = await self._script("heartbeat", (key,), (sender, "1" if overwrite else "0"))
        return _str(value)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds unless another owner holds it."""
        key = f"{self._prefix}:lease:{name}"
        result = await self._script("acquire", (key,), (owner, _ms(check_ttl("ttl", ttl))))
        return bool(int(result))

    async def renew_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """:meth:`acquire_lease` for each name, in one script call."""
        if not names:
            return []
        keys = [f"{self._prefix}:lease:{name}" for name in names]
        result = await self._script("acquire_many", keys, (owner, _ms(check_ttl("ttl", ttl))))
        return [bool(int(x)) for x in result]

    async def release_lease(self, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        await self._script("release", (f"{self._prefix}:lease:{name}",), (owner,))

    # -- handoff ------------------------------------------------------------------------------
    async def set_handoff(self, interface: str, contact: str, record: str | None) -> None:
        """Store (or with ``None`` delete) the contact's handoff record, a field of the
        interface's ``handoffs`` hash; see :meth:`SessionStore.set_handoff`."""
        key = self._base(interface) + "handoffs"
        if record is None:
            await self._call("delete a handoff", lambda c: c.hdel(key, contact))
        else:
            await self._call("store a handoff", lambda c: c.hset(key, contact, record))

    async def get_handoff(self, interface: str, contact: str) -> str | None:
        """The contact's handoff record, or ``None``."""
        key = self._base(interface) + "handoffs"
        value = await self._call("read a handoff", lambda c: c.hget(key, contact))
        return None if value is None else _str(value)

    async def handoffs(self, interface: str) -> dict[str, str]:
        """Every contact with a handoff record -> its record."""
        key = self._base(interface) + "handoffs"
        rows = await self._call("read the handoffs", lambda c: c.hgetall(key))
        return {_str(k): _str(v) for k, v in rows.items()}
