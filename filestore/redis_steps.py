"""The scripts of ``redis_scripts`` run as steps, one single-key command at a time, for Redis Cluster.

Cluster refuses a script that touches keys of several hash slots, and a
session's keys (``{ns}:session:{key}``, its lookups, its wait entries) are
spread over all of them: greentic's layout has no hash tag, and must not
get one, or Rust runners would no longer find the sessions. So on a cluster
each script's own Lua text runs here, in an embedded Lua (``lupa``), and
every ``redis.call`` it makes is one command sent to the node owning its
key. The order of the steps is therefore the scripts' order, written for
it: a mutation writes the session (and its owner record) before any lookup
or wait entry that points at it; a removal takes a wait out of its user's
SET, then its scope entries, then the session, then the lookups; every
reader checks an entry against the session it points at (exists, and is
the scope asked for) and deletes a dangling one only if it still holds the
key read (``redis.del_if``, one command here). What is not atomic any
more, and what that means for readers, is in docs/scaling-out.md.

``steps(script, keys, args)`` is a generator: it yields each command as a
tuple and takes the server's reply back by ``send``, and returns the
script's reply. A sync client (``StepScript``) and an asyncio client drive
the same generator, so the step order lives only in the script text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, Final

import redis.exceptions
from lupa import lua54  # type: ignore[import-untyped]

Command = tuple[Any, ...]
Steps = Generator[Command, Any, Any]

# The commands of the scripts that change a key (for ``min_replicas``: which nodes to WAIT on).
WRITES: Final = frozenset({"SET", "DEL", "SADD", "SREM", "PEXPIRE", "PEXPIREAT"})

# The scripts' redis.del_if as steps: one command, compare and delete together on the key's node.
DEL_IF: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# cjson and redis.call as the scripts use them; the body runs inside pcall so that its
# ``error({err = ...})`` becomes an error reply, as on a server (Lua 5.4 yields across pcall).
_PRELUDE: Final = """
local py_decode = ...
local null = setmetatable({}, {__tostring = function() return 'null' end})
local cjson = {null = null}
local function from_python(value)
  if value == nil then return null end
  return value
end
cjson.decode = function(text)
  local ok, value = py_decode(text, null)
  if not ok then error('invalid JSON') end
  return value
end
cjson.encode = function(value)
  if type(value) == 'string' then return '"' .. value:gsub('[%c"\\\\]', function(c)
    return string.format('\\\\u%04x', c:byte()) end) .. '"' end
  error('cjson.encode: only strings are encoded here')
end
return function(KEYS, ARGV, body_source)
  local redis = {
    call = function(...) return coroutine.yield({'call', ...}) end,
    del_if = function(name, value) return coroutine.yield({'call', 'DELIFEQ', name, value}) end,
  }
  local env = setmetatable({KEYS = KEYS, ARGV = ARGV, redis = redis, cjson = cjson}, {__index = _G})
  local body = load(body_source, 'script', 't', env)
  local ok, result = pcall(body)
  if ok then return {'done', result} end
  if type(result) == 'table' and result.err then return {'error', result.err} end
  return {'error', tostring(result)}
end
"""


class _Runtime(threading.local):
    """One Lua state per thread: lupa runs one coroutine of a state at a time."""

    def __init__(self) -> None:
        self.lua = lua54.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
        self.runner: Any = self.lua.execute(_PRELUDE, self._decode)

    def _decode(self, text: object, null: object) -> tuple[bool, object]:
        try:
            value = json.loads(str(text))
        except (ValueError, RecursionError):
            return (False, None)
        return (True, self.to_lua(value, null))

    def to_lua(self, value: object, null: object = None) -> object:
        """A decoded JSON value or a server reply as the scripts see it (nil reply: false)."""
        if value is None:
            return False if null is None else null
        if isinstance(value, dict):
            return self.lua.table_from({key: self.to_lua(item, null) for key, item in value.items()})
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value) if isinstance(value, (set, frozenset)) else value
            return self.lua.table_from([self.to_lua(item, null) for item in items])
        if isinstance(value, bool) and null is None:
            return "OK" if value else False  # redis-py's SET and friends answer True for +OK
        return value


_runtime: Final = _Runtime()


def _from_lua(value: object) -> object:
    """A script's reply as the server turns it into RESP: a table is its array part, false nil."""
    if value is False or value is None:
        return None
    if value is True:
        return 1
    if lua54.lua_type(value) == "table":
        items = []
        index = 1
        table: Any = value
        while table[index] is not None and table[index] is not False:
            items.append(_from_lua(table[index]))
            index += 1
        return items
    return value


def steps(script: str, keys: Iterable[str], args: Iterable[str]) -> Steps:
    """Run ``script`` as steps: yields each command, takes its reply, returns the script's reply.

    An error reply of the script (``error({err = ...})``) raises
    ``redis.exceptions.ResponseError`` with its text, as the server's would.
    """
    runtime = _runtime
    thread = runtime.runner.coroutine(
        runtime.lua.table_from(list(keys)), runtime.lua.table_from(list(args)), script
    )
    request: Any = thread.send(None)
    while request[1] == "call":
        command = tuple(request[index] for index in range(2, len(request) + 1))
        reply = yield command
        request = thread.send(runtime.to_lua(reply))
    if request[1] == "error":
        raise redis.exceptions.ResponseError(request[2])
    return _from_lua(request[2])


def run(script: str, keys: Iterable[str], args: Iterable[str], execute: Callable[[Command], Any]) -> Any:
    """Drive ``steps`` with ``execute`` (one command to its reply); the script's reply."""
    walk = steps(script, keys, args)
    try:
        command = next(walk)
        while True:
            command = walk.send(execute(command))
    except StopIteration as done:
        return done.value


class StepScript:
    """A script on a Redis Cluster client, called like redis-py's ``Script``: ``script(keys, args)``.

    With ``min_replicas`` > 0, each command that changes a key is followed,
    on the same connection to the key's node, by ``WAIT min_replicas
    wait_ms``; fewer replicas acknowledging raises ``ReplicasMissing``.
    """

    def __init__(self, client: Any, text: str, *, min_replicas: int = 0, wait_ms: int = 0) -> None:
        self.client = client
        self.text = text
        self.min_replicas = min_replicas
        self.wait_ms = wait_ms

    def __call__(self, keys: Iterable[str] = (), args: Iterable[str] = ()) -> Any:
        return run(self.text, keys, args, self._execute)

    def _execute(self, command: Command) -> Any:
        name = str(command[0]).upper()
        if len(command) > 2 and name in {"DEL", "EXISTS"}:
            # One slot per command on a cluster: a multi-key DEL is one DEL per key.
            return sum(self._execute((name, key)) for key in command[1:])
        key = command[1]
        if name == "DELIFEQ":
            command = ("EVAL", DEL_IF, 1, key, command[2])
        if self.min_replicas and (name in WRITES or name == "DELIFEQ"):
            node = self.client.get_redis_connection(self.client.get_node_from_key(key))
            pipe = node.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", self.min_replicas, self.wait_ms)
            reply, acknowledged = pipe.execute()
            check_replicas(acknowledged, self.min_replicas)
            return reply
        return self.client.execute_command(*command)


class ReplicasMissing(redis.exceptions.RedisError):
    """Fewer replicas than ``min_replicas`` acknowledged a write within the wait (it was applied)."""


def check_replicas(acknowledged: int, wanted: int) -> None:
    """Raise ``ReplicasMissing`` unless WAIT's ``acknowledged`` count reaches ``wanted``."""
    if acknowledged < wanted:
        raise ReplicasMissing(f"only {acknowledged} of {wanted} replicas acknowledged the write")
