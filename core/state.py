"""Shared hot state: device presence, counters with expiry (caps), locks, small cached values.

Two implementations behind one interface: ``RedisHotState`` (shared by every API process) and
``InProcessHotState`` (one process only). Everything here may be lost without losing a durable
fact; callers rebuild from SQL. When the store cannot be reached, ``HotStateUnavailable`` is
raised so the API answers 503 (fail closed), never 500.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

JSONDict = dict[str, Any]


# A device's presence is read and written under its lock (ping groups, erasure), so two units
# of work on one device never overlap, whichever API processes run them.
DEVICE_LOCK_TTL_S = 10.0  # longer than any group takes; frees a crashed holder's devices


def device_lock(device_id: str) -> str:
    """The name of a device's lock in the hot state."""
    return f"device:{device_id}"


def _lock_key(device_id: str) -> str:
    return f"lock:{device_lock(device_id)}"


def _report_unwritten(count: int) -> None:
    if count:
        log.warning(
            "presence of %d devices not written: their locks expired before the group closed",
            count,
        )


def _check_close(lock_names: Sequence[str], presence: Mapping[str, JSONDict]) -> None:
    missing = {device_lock(d) for d in presence} - set(lock_names)
    if missing:
        raise ValueError(f"presence to write without its device's lock: {sorted(missing)}")


class HotStateUnavailable(RuntimeError):
    """The hot-state store could not be reached."""


@dataclass(frozen=True, slots=True)
class GroupOpening:
    """What ``HotState.open_group`` read: which locks were taken, the versioned values, and the
    presence records of the devices (absent ones left out)."""

    held: list[bool]
    versioned: list[tuple[str | None, int]]
    presence: dict[str, JSONDict]
    counts: list[int] = field(default_factory=list)  # the counters, after their increment


@dataclass(frozen=True, slots=True)
class GroupClose:
    """A ping group's end, as ``HotState.close_group`` takes it: the presence records to write
    for the devices whose locks ``owner`` still holds, then every lock of ``lock_names`` to
    free. ``expires``: ``time.monotonic()`` after which the locks have expired on their own."""

    lock_names: Sequence[str]
    owner: str
    presence: Mapping[str, JSONDict]
    ttl_s: int
    expires: float


class HotState(Protocol):
    shared: bool

    def ping(self) -> None: ...

    def load_presence(self, device_ids: Iterable[str]) -> dict[str, JSONDict]:
        """Presence records of many devices in one round trip; absent devices are left out."""
        ...

    def store_presence(self, records: Mapping[str, JSONDict], ttl_s: int) -> None:
        """Write many presence records in one round trip."""
        ...

    def forget_presence(self, device_ids: Iterable[str]) -> None:
        """Drop the presence records of these devices (erasure: they hold the last fix)."""
        ...

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        """Add to a counter; the expiry is set when the counter is created."""
        ...

    def incr_many(self, keys: Sequence[str], ttl_s: int) -> list[int]:
        """Add one to each counter (each created with the expiry) in one round trip; each
        increment is atomic on its own key, the keys may live in different slots."""
        ...

    def incr_within(
        self, key: str, limit: int, ttl_s: int, seed: Callable[[], int] | None = None
    ) -> bool:
        """Atomically add one if the counter is below ``limit``; False (unchanged) otherwise.
        ``seed``: where the counter is absent (first use, or the hot state was lost), what it
        counts from, read from the durable record; called only then."""
        ...

    def counter(self, key: str) -> int: ...

    def claim_spacing(self, key: str, stamp: float, gap_s: float, ttl_s: int) -> bool:
        """Atomically record ``stamp`` (seconds, the caller's clock) if the last recorded stamp is
        absent or at least ``gap_s`` older; False (unchanged) otherwise. A cooldown."""
        ...

    def release_spacing(self, key: str, stamp: float) -> None:
        """Undo ``claim_spacing`` if ``stamp`` is still the recorded one (a later check failed)."""
        ...

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool: ...

    def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool: ...

    def release_lock(self, name: str, owner: str) -> bool: ...

    def acquire_locks(self, names: Sequence[str], owner: str, ttl_s: float) -> list[bool]:
        """Try to take each lock for ``owner`` (each on its own, with the expiry) in one round
        trip; which were taken."""
        ...

    def release_locks(self, names: Sequence[str], owner: str) -> None:
        """Release each of these locks that ``owner`` still holds, in one round trip."""
        ...

    def open_group(
        self,
        lock_names: Sequence[str],
        owner: str,
        ttl_s: float,
        versioned: Sequence[tuple[str, str]],
        presence_ids: Sequence[str],
        counters: Sequence[str] = (),
        counter_ttl_s: int = 0,
        closing: GroupClose | None = None,
    ) -> GroupOpening:
        """``close_group(closing)`` (an earlier group's end, when given), then
        ``acquire_locks`` and ``incr_many(counters, counter_ttl_s)`` (the group's rate-limit
        counts), then ``get_versioned`` and ``load_presence``, in one round trip where the
        store allows it (one per step on a cluster). The reads follow the lock attempts: a
        record read for a device whose lock was taken is the one its last holder left (the
        closing group's, for a device in both)."""
        ...

    def close_group(
        self, lock_names: Sequence[str], owner: str, presence: Mapping[str, JSONDict], ttl_s: int
    ) -> None:
        """``store_presence`` for the devices whose lock (``device_lock``, one of
        ``lock_names``) ``owner`` still holds, then ``release_locks``: in one round trip where
        the store allows it (one per step on a cluster). A close that comes late, after a lock
        expired and another owner may have moved on, writes nothing over that owner's record."""
        ...

    def get(self, key: str) -> str | None: ...

    def get_versioned(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str | None, int]]:
        """For each (key, version counter): the cached value and the current value of the
        counter that versions it, read together; all pairs in one round trip."""
        ...

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def close(self) -> None: ...


class InProcessHotState:
    """Hot state in this process's memory. Correct for a single process only."""

    shared = False

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._lock = threading.Lock()
        self._values: dict[str, tuple[Any, float | None]] = {}

    def _live(self, key: str) -> Any | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and self._now() >= deadline:
            del self._values[key]
            return None
        return value

    def _deadline(self, ttl_s: float | None) -> float | None:
        return None if ttl_s is None else self._now() + ttl_s

    def ping(self) -> None:
        return None

    def load_presence(self, device_ids: Iterable[str]) -> dict[str, JSONDict]:
        with self._lock:
            found = {d: self._live(f"presence:{d}") for d in device_ids}
        return {d: json.loads(v) for d, v in found.items() if v is not None}

    def store_presence(self, records: Mapping[str, JSONDict], ttl_s: int) -> None:
        with self._lock:
            for device_id, record in records.items():
                self._values[f"presence:{device_id}"] = (json.dumps(record), self._deadline(ttl_s))

    def forget_presence(self, device_ids: Iterable[str]) -> None:
        with self._lock:
            for device_id in device_ids:
                self._values.pop(f"presence:{device_id}", None)

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        with self._lock:
            current = self._live(key)
            if current is None:
                self._values[key] = (amount, self._deadline(ttl_s))
                return amount
            deadline = self._values[key][1]
            self._values[key] = (int(current) + amount, deadline)
            return int(current) + amount

    def incr_many(self, keys: Sequence[str], ttl_s: int) -> list[int]:
        return [self.incr(key, ttl_s) for key in keys]

    def incr_within(
        self, key: str, limit: int, ttl_s: int, seed: Callable[[], int] | None = None
    ) -> bool:
        with self._lock:
            current = self._live(key)
            if current is None:
                start = seed() if seed is not None else 0
                if start >= limit:
                    if seed is not None:
                        self._values[key] = (start, self._deadline(ttl_s))
                    return False
                self._values[key] = (start + 1, self._deadline(ttl_s))
                return True
            if int(current) >= limit:
                return False
            self._values[key] = (int(current) + 1, self._values[key][1])
            return True

    def counter(self, key: str) -> int:
        with self._lock:
            value = self._live(key)
        return 0 if value is None else int(value)

    def claim_spacing(self, key: str, stamp: float, gap_s: float, ttl_s: int) -> bool:
        with self._lock:
            last = self._live(key)
            if last is not None and gap_s > 0 and stamp - float(last) < gap_s:
                return False
            self._values[key] = (stamp, self._deadline(ttl_s))
            return True

    def release_spacing(self, key: str, stamp: float) -> None:
        with self._lock:
            if self._live(key) == stamp:
                del self._values[key]

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        with self._lock:
            if self._live(f"lock:{name}") is not None:
                return False
            self._values[f"lock:{name}"] = (owner, self._deadline(ttl_s))
            return True

    def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        with self._lock:
            if self._live(f"lock:{name}") != owner:
                return False
            self._values[f"lock:{name}"] = (owner, self._deadline(ttl_s))
            return True

    def release_lock(self, name: str, owner: str) -> bool:
        with self._lock:
            if self._live(f"lock:{name}") != owner:
                return False
            del self._values[f"lock:{name}"]
            return True

    def acquire_locks(self, names: Sequence[str], owner: str, ttl_s: float) -> list[bool]:
        return [self.acquire_lock(name, owner, ttl_s) for name in names]

    def release_locks(self, names: Sequence[str], owner: str) -> None:
        for name in names:
            self.release_lock(name, owner)

    def open_group(
        self,
        lock_names: Sequence[str],
        owner: str,
        ttl_s: float,
        versioned: Sequence[tuple[str, str]],
        presence_ids: Sequence[str],
        counters: Sequence[str] = (),
        counter_ttl_s: int = 0,
        closing: GroupClose | None = None,
    ) -> GroupOpening:
        if closing is not None:
            self.close_group(closing.lock_names, closing.owner, closing.presence, closing.ttl_s)
        held = self.acquire_locks(lock_names, owner, ttl_s)
        counts = self.incr_many(counters, counter_ttl_s)
        return GroupOpening(
            held, self.get_versioned(versioned), self.load_presence(presence_ids), counts
        )

    def close_group(
        self, lock_names: Sequence[str], owner: str, presence: Mapping[str, JSONDict], ttl_s: int
    ) -> None:
        _check_close(lock_names, presence)
        written = 0
        with self._lock:
            for device_id, record in presence.items():
                if self._live(_lock_key(device_id)) == owner:
                    expiry = self._deadline(ttl_s)
                    self._values[f"presence:{device_id}"] = (json.dumps(record), expiry)
                    written += 1
        _report_unwritten(len(presence) - written)
        self.release_locks(lock_names, owner)

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._live(f"kv:{key}")
        return None if value is None else str(value)

    def get_versioned(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str | None, int]]:
        with self._lock:
            found = [(self._live(f"kv:{key}"), self._live(counter)) for key, counter in pairs]
        return [
            (None if value is None else str(value), 0 if version is None else int(version))
            for value, version in found
        ]

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        with self._lock:
            self._values[f"kv:{key}"] = (value, self._deadline(ttl_s))

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(f"kv:{key}", None)

    def close(self) -> None:
        with self._lock:
            self._values.clear()


# ARGV[3]: what an absent counter starts from; "?" when the caller must be asked (-1 back).
_INCR_WITHIN = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  if ARGV[3] == '?' then return -1 end
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
  raw = ARGV[3]
end
if tonumber(raw) >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1
"""
_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return value
"""
# Many keys in one call (one round trip, where every key may be named in one script: not on a
# cluster). A script in a redis-py pipeline costs a SCRIPT EXISTS round trip of its own first.
_INCR_EACH = """
local values = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('INCRBY', key, 1)
  if value == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  values[i] = value
end
return values
"""
_RELEASE_EACH = """
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then released = released + redis.call('DEL', key) end
end
return released
"""
# A group's end, shared by the two scripts below. From KEYS[base + 1]: n presence records,
# their n devices' locks, then the group's other locks, c keys in all; the records are ARGV[at +
# 1 .. at + n]. Each record is written (expiring after ttl s) only while ``owner`` holds its
# device's lock; then every lock ``owner`` holds is released. Returns the records written.
_END_GROUP = """
local function end_group(base, c, n, owner, ttl, at)
  local written = 0
  for i = 1, n do
    if redis.call('GET', KEYS[base + n + i]) == owner then
      redis.call('SET', KEYS[base + i], ARGV[at + i], 'EX', ttl)
      written = written + 1
    end
  end
  for i = base + n + 1, base + c do
    if redis.call('GET', KEYS[i]) == owner then redis.call('DEL', KEYS[i]) end
  end
  return written
end
"""
# close_group. KEYS: as above; ARGV: the owner, the records' expiry (s), the n records.
_STORE_AND_RELEASE = (
    _END_GROUP
    + """
return end_group(0, #KEYS, #ARGV - 2, ARGV[1], ARGV[2], 2)
"""
)
# A ping group's opening in one command, after an earlier group's end when there is one.
# ARGV[6] keys and ARGV[7] records of that end come first (0 and 0 for none; its owner ARGV[8],
# the records' expiry ARGV[9], the records from ARGV[10]). Then KEYS: ARGV[3] device locks,
# ARGV[4] rate-limit counters, then the keys to read. Each lock is taken if free (NX, PX ARGV[2]
# ms, owner ARGV[1]): 1 if taken, 0 if another holds it; each counter goes up by one (a new one
# expires after ARGV[5] s), its new value returned; then each other key is read (false, a nil
# reply, when missing). The reply starts with the number of the end's records written.
_OPEN_GROUP = (
    _END_GROUP
    + """
local ended = tonumber(ARGV[6])
local out = {0}
if ended > 0 then out[1] = end_group(0, ended, tonumber(ARGV[7]), ARGV[8], ARGV[9], 9) end
local locks, counters = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, locks do
  out[i + 1] = 0
  if redis.call('SET', KEYS[ended + i], ARGV[1], 'NX', 'PX', ARGV[2]) then out[i + 1] = 1 end
end
for i = locks + 1, locks + counters do
  local key = KEYS[ended + i]
  local value = redis.call('INCRBY', key, 1)
  if value == 1 then redis.call('EXPIRE', key, ARGV[5]) end
  out[i + 1] = value
end
for i = ended + locks + counters + 1, #KEYS do
  out[i - ended + 1] = redis.call('GET', KEYS[i])
end
return out
"""
)
_CLAIM_SPACING = """
local last = redis.call('GET', KEYS[1])
local gap = tonumber(ARGV[2])
if last and gap > 0 and tonumber(ARGV[1]) - tonumber(last) < gap then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
_RELEASE_SPACING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisHotState:
    """Hot state in Redis, shared by every API process. Keys carry a prefix.

    With ``cluster=True`` the client is redis-py's ``RedisCluster`` (the URL names any node).
    Every atomic operation (a Lua script, an MGET read together) touches keys of one hash slot:
    keys that must be read or changed together share a ``{...}`` hash tag (see
    ``consent.gate``); batches over many devices (presence) are split by slot by the client.
    """

    shared = True

    def __init__(
        self, url: str, prefix: str = "oe:", timeout_s: float = 2.0, *, cluster: bool = False
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain '{' or '}' (hash tags)")
        self._prefix = prefix
        self._cluster = cluster
        self._redis: Any
        if cluster:
            self._redis = RedisCluster.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            )
        else:
            self._redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
            )
        self._incr_within = self._redis.register_script(_INCR_WITHIN)
        self._incr = self._redis.register_script(_INCR)
        self._extend = self._redis.register_script(_EXTEND_LOCK)
        self._claim_spacing = self._redis.register_script(_CLAIM_SPACING)
        self._release_spacing = self._redis.register_script(_RELEASE_SPACING)
        self._release = self._redis.register_script(_RELEASE_LOCK)
        self._incr_each = self._redis.register_script(_INCR_EACH)
        self._release_each = self._redis.register_script(_RELEASE_EACH)
        self._store_and_release = self._redis.register_script(_STORE_AND_RELEASE)
        self._open_group = self._redis.register_script(_OPEN_GROUP)

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RedisError as exc:
            raise HotStateUnavailable(f"hot-state store unreachable: {exc}") from exc

    def ping(self) -> None:
        self._call(self._redis.ping)

    def load_presence(self, device_ids: Iterable[str]) -> dict[str, JSONDict]:
        ids = list(device_ids)
        if not ids:
            return {}
        keys = [self._k(f"presence:{d}") for d in ids]
        read = self._redis.mget_nonatomic if self._cluster else self._redis.mget
        return _presence(ids, self._call(lambda: read(keys)))

    def store_presence(self, records: Mapping[str, JSONDict], ttl_s: int) -> None:
        if not records:
            return

        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for device_id, record in records.items():
                pipe.set(self._k(f"presence:{device_id}"), json.dumps(record), ex=ttl_s)
            pipe.execute()

        self._call(write)

    def forget_presence(self, device_ids: Iterable[str]) -> None:
        keys = [self._k(f"presence:{d}") for d in device_ids]
        if keys:
            self._call(lambda: self._redis.delete(*keys))

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        return int(self._call(lambda: self._incr(keys=[self._k(key)], args=[amount, ttl_s])))

    def incr_many(self, keys: Sequence[str], ttl_s: int) -> list[int]:
        if not keys:
            return []

        def run() -> list[Any]:
            if self._cluster:  # keys in many slots, and no scripts in a cluster pipeline
                return [self._incr(keys=[self._k(key)], args=[1, ttl_s]) for key in keys]
            return list(self._incr_each(keys=[self._k(key) for key in keys], args=[ttl_s]))

        return [int(v) for v in self._call(run)]

    def incr_within(
        self, key: str, limit: int, ttl_s: int, seed: Callable[[], int] | None = None
    ) -> bool:
        keys = [self._k(key)]
        start = "?" if seed is not None else "0"
        result = int(self._call(lambda: self._incr_within(keys=keys, args=[limit, ttl_s, start])))
        if result == -1:  # absent: counted from the durable record (a second call, rarely)
            assert seed is not None
            counted = seed()
            result = int(
                self._call(lambda: self._incr_within(keys=keys, args=[limit, ttl_s, counted]))
            )
        return result == 1

    def counter(self, key: str) -> int:
        value = self._call(lambda: self._redis.get(self._k(key)))
        return 0 if value is None else int(value)

    def claim_spacing(self, key: str, stamp: float, gap_s: float, ttl_s: int) -> bool:
        args = [repr(float(stamp)), gap_s, max(1, ttl_s)]
        return bool(int(self._call(lambda: self._claim_spacing(keys=[self._k(key)], args=args))))

    def release_spacing(self, key: str, stamp: float) -> None:
        args = [repr(float(stamp))]
        self._call(lambda: self._release_spacing(keys=[self._k(key)], args=args))

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return bool(
            self._call(lambda: self._redis.set(self._k(f"lock:{name}"), owner, nx=True, px=ms))
        )

    def extend_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return bool(
            int(self._call(lambda: self._extend(keys=[self._k(f"lock:{name}")], args=[owner, ms])))
        )

    def release_lock(self, name: str, owner: str) -> bool:
        return bool(
            int(self._call(lambda: self._release(keys=[self._k(f"lock:{name}")], args=[owner])))
        )

    def acquire_locks(self, names: Sequence[str], owner: str, ttl_s: float) -> list[bool]:
        if not names:
            return []
        ms = max(1, int(ttl_s * 1000))

        def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)  # a cluster pipeline splits by node
            for name in names:
                pipe.set(self._k(f"lock:{name}"), owner, nx=True, px=ms)
            return list(pipe.execute())

        return [bool(taken) for taken in self._call(run)]

    def release_locks(self, names: Sequence[str], owner: str) -> None:
        if not names:
            return

        def run() -> None:
            if self._cluster:  # keys in many slots, and no scripts in a cluster pipeline
                for name in names:
                    self._release(keys=[self._k(f"lock:{name}")], args=[owner])
                return
            self._release_each(keys=[self._k(f"lock:{name}") for name in names], args=[owner])

        self._call(run)

    def open_group(
        self,
        lock_names: Sequence[str],
        owner: str,
        ttl_s: float,
        versioned: Sequence[tuple[str, str]],
        presence_ids: Sequence[str],
        counters: Sequence[str] = (),
        counter_ttl_s: int = 0,
        closing: GroupClose | None = None,
    ) -> GroupOpening:
        if self._cluster:  # keys in many slots: each step on its own, split by slot
            if closing is not None:
                self.close_group(closing.lock_names, closing.owner, closing.presence, closing.ttl_s)
            held = self.acquire_locks(lock_names, owner, ttl_s)
            counts = self.incr_many(counters, counter_ttl_s)
            return GroupOpening(
                held, self.get_versioned(versioned), self.load_presence(presence_ids), counts
            )
        ms = max(1, int(ttl_s * 1000))
        value_keys = [self._k(k) for key, counter in versioned for k in (f"kv:{key}", counter)]
        presence_keys = [self._k(f"presence:{d}") for d in presence_ids]
        keys: list[str] = []
        args: list[Any] = []
        if closing is not None:
            keys, args = self._end_keys(
                closing.lock_names, closing.owner, closing.presence, closing.ttl_s
            )
        ended, records = len(keys), len(closing.presence) if closing is not None else 0
        keys += [self._k(f"lock:{name}") for name in lock_names]
        keys += [self._k(key) for key in counters] + value_keys + presence_keys
        args = [owner, ms, len(lock_names), len(counters), counter_ttl_s, ended, records, *args]
        written, *replies = self._call(lambda: self._open_group(keys=keys, args=args))
        if closing is not None:
            _report_unwritten(records - int(written))
        taken = len(lock_names) + len(counters)
        held = [flag == 1 for flag in replies[: len(lock_names)]]
        counts = [int(n) for n in replies[len(lock_names) : taken]]
        raw, found = replies[taken : taken + len(value_keys)], replies[taken + len(value_keys) :]
        return GroupOpening(held, _versioned(raw), _presence(presence_ids, found), counts)

    def close_group(
        self, lock_names: Sequence[str], owner: str, presence: Mapping[str, JSONDict], ttl_s: int
    ) -> None:
        if self._cluster or not presence:  # on a cluster a record and its lock: two slots
            _check_close(lock_names, presence)
            owned = self._owned(owner, presence)
            self.store_presence(owned, ttl_s)
            _report_unwritten(len(presence) - len(owned))
            self.release_locks(lock_names, owner)
            return
        keys, args = self._end_keys(lock_names, owner, presence, ttl_s)
        written = int(self._call(lambda: self._store_and_release(keys=keys, args=args)))
        _report_unwritten(len(presence) - written)

    def _end_keys(
        self,
        lock_names: Sequence[str],
        owner: str,
        presence: Mapping[str, JSONDict],
        ttl_s: int,
    ) -> tuple[list[str], list[Any]]:
        """Keys and arguments of a group's end in a script (``_END_GROUP``): the presence
        records, their devices' locks, the other locks; the owner, the expiry, the records."""
        _check_close(lock_names, presence)
        own = [device_lock(d) for d in presence]
        others = sorted(set(lock_names) - set(own))
        keys = [self._k(f"presence:{d}") for d in presence]
        keys += [self._k(f"lock:{name}") for name in [*own, *others]]
        return keys, [owner, ttl_s, *(json.dumps(r) for r in presence.values())]

    def _owned(self, owner: str, presence: Mapping[str, JSONDict]) -> dict[str, JSONDict]:
        """The records whose device's lock ``owner`` holds (checked just before they are
        written: on a cluster the two keys cannot be read and written in one script)."""
        if not presence:
            return {}

        def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for device_id in presence:
                pipe.get(self._k(f"lock:{device_lock(device_id)}"))
            return list(pipe.execute())

        holders = self._call(run)
        pairs = zip(presence.items(), holders, strict=True)
        return {device_id: record for (device_id, record), holder in pairs if holder == owner}

    def get(self, key: str) -> str | None:
        value = self._call(lambda: self._redis.get(self._k(f"kv:{key}")))
        return None if value is None else str(value)

    def get_versioned(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str | None, int]]:
        if not pairs:
            return []
        keys = [self._k(k) for key, counter in pairs for k in (f"kv:{key}", counter)]
        # one MGET; on a cluster one per slot, and a pair shares a slot (its hash tag), so each
        # value is read together with its version counter
        read = self._redis.mget_nonatomic if self._cluster else self._redis.mget
        return _versioned(self._call(lambda: read(keys)))

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        self._call(lambda: self._redis.set(self._k(f"kv:{key}"), value, px=px))

    def delete(self, *keys: str) -> None:
        if keys:
            self._call(lambda: self._redis.delete(*[self._k(f"kv:{k}") for k in keys]))

    def close(self) -> None:
        self._redis.close()


def _versioned(raw: Sequence[Any]) -> list[tuple[str | None, int]]:
    """(value, version) pairs from one MGET of value, counter, value, counter, ..."""
    return [
        (None if value is None else str(value), 0 if version is None else int(version))
        for value, version in zip(raw[0::2], raw[1::2], strict=True)
    ]


def _presence(device_ids: Sequence[str], raw: Sequence[Any]) -> dict[str, JSONDict]:
    return {d: json.loads(v) for d, v in zip(device_ids, raw, strict=True) if v is not None}


def make_hot_state(redis_url: str | None, prefix: str = "oe:", cluster: bool = False) -> HotState:
    if redis_url is None:
        return InProcessHotState()
    return RedisHotState(redis_url, prefix=prefix, cluster=cluster)
