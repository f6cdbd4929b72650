"""The Lua scripts of ``RedisSessionStore``: each call that changes or cleans keys is one script.

A script runs atomically on the server, so a session, its owner, its user
lookups and its wait entries change together however many writers share the
server. The keys (``{ns}`` is the store's namespace)::

    {ns}:session:{key}                                   greentic: the SessionData JSON (serde's)
    {ns}:user:{env}:{tenant}:{team or -}:{user}           greentic 0.3-0.4.3: the user's active session
    {ns}:waits:user:{env}:{tenant}:{team or -}:{user}     greentic 0.4.5+: SET of the user's wait keys
    {ns}:waits:scope:{env}:{tenant}:{team or -}:{user}:{scope_hash}   greentic 0.4.5+: the wait's key
    {ns}:owner:{key}                                     ours: the session's owner scope, JSON
    {ns}:wait:{key}                                      ours: the scope_hash of the session's wait
    {ns}:scoped-user:...:{team}:{user}                   ours: the lookup, for team '' (none) or '-'
    {ns}:scoped-waits:user:...  / :scoped-waits:scope:...  ours: the wait entries, same two teams

greentic writes a missing team as ``-``, which is also a team id, so "no
team" and the team ``-`` share greentic's keys; the ``scoped-`` entries keep
the two apart (see redis_store's docstring). A session with a TTL has it on
its session key and on every key of its own (owner, wait, scope entries), set
in one script, so they all expire at the same instant; the SETs and lookups
have none and are cleaned by the reads, as greentic's reads do.

An owner is a Lua array ``{env, tenant, team or cjson.null, user or cjson.null}``.
A stored value that does not decode is an error reply ``CORRUPT "<key>"``
(greentic's Internal); the key is JSON-quoted, as Redis appends its own text.
"""

from __future__ import annotations

from typing import Final

_COMMON: Final = """
-- Delete name if it still holds value. Run as steps on a cluster (redis_steps), redis.del_if
-- is one command on the key's node, so an entry another writer has just pointed at a new
-- session is never deleted for the old one it held when read.
local del_if = redis.del_if or function(name, value)
  if redis.call('GET', name) == value then redis.call('DEL', name) end
end
local function stored_table(name, text)
  local ok, value = pcall(cjson.decode, text)
  if ok and type(value) == 'table' then return value end
  error({err = 'CORRUPT ' .. cjson.encode(name)})
end
local function pick(a, b)
  if a ~= nil and a ~= cjson.null then return a end
  if b ~= nil and b ~= cjson.null then return b end
  return cjson.null
end
-- The stored owner of a session (ours if recorded, else read from its Rust-written data).
-- A Rust runner's remove leaves our record behind, and it may then write the key again for
-- another owner: a record that disagrees with the data it is about is stale and not used.
local function owner_of(session_key, owner_key)
  local owner = redis.call('GET', owner_key)
  local data = redis.call('GET', session_key)
  if owner then
    owner = stored_table(owner_key, owner)
    if not data then return owner end
  end
  if not data then return nil end
  local ctx = stored_table(session_key, data)['tenant_ctx']
  if type(ctx) ~= 'table' then error({err = 'CORRUPT ' .. cjson.encode(session_key)}) end
  local user = pick(ctx['user_id'], ctx['user'])
  local from_data = {ctx['env'], ctx['tenant_id'], pick(ctx['team_id'], ctx['team']), user}
  if owner and owner[1] == from_data[1] and owner[2] == from_data[2] and owner[3] == from_data[3]
      and (user == cjson.null or owner[4] == user) then
    return owner
  end
  return from_data
end
-- The owner of a session that exists, else nil (an owner entry outliving its session is stale).
local function live_owner(ns, key)
  local session = ns .. ':session:' .. key
  if redis.call('EXISTS', session) == 0 then return nil end
  return owner_of(session, ns .. ':owner:' .. key)
end
local function dashed(owner)
  if owner[3] == cjson.null then return '-' end
  return owner[3]
end
-- The team field of our scoped entries: '' for none, '-' for the team '-'; nil for other teams.
local function scoped_team(owner)
  if owner[3] == cjson.null then return '' end
  if owner[3] == '-' then return '-' end
  return nil
end
local function same_owner(a, b)
  return a[1] == b[1] and a[2] == b[2] and a[3] == b[3] and a[4] == b[4]
end
-- Two owners that greentic's keys cannot tell apart (no team and the team '-').
local function shares_keys(a, b)
  return a[1] == b[1] and a[2] == b[2] and dashed(a) == dashed(b) and a[4] == b[4]
end
local function lookup_key(ns, owner)
  if owner[4] == cjson.null then return nil end
  return ns .. ':user:' .. owner[1] .. ':' .. owner[2] .. ':' .. dashed(owner) .. ':' .. owner[4]
end
local function scoped_key(ns, owner)
  local team = scoped_team(owner)
  if owner[4] == cjson.null or not team then return nil end
  return ns .. ':scoped-user:' .. owner[1] .. ':' .. owner[2] .. ':' .. team .. ':' .. owner[4]
end
local function point(ns, owner, key)
  local lookup = lookup_key(ns, owner)
  if lookup then redis.call('SET', lookup, key) end
  local scoped = scoped_key(ns, owner)
  if scoped then redis.call('SET', scoped, key) end
end
-- team and user: '' for none.
local function owned_by(owner, env, tenant, team, user)
  local function text(value)
    if value == cjson.null then return '' end
    return value
  end
  return owner[1] == env and owner[2] == tenant and text(owner[3]) == team and text(owner[4]) == user
end
-- A wait owner's (it has a user) SETs of wait keys, and its scope entries for a hash:
-- greentic's first, then ours for the two teams that share greentic's.
local function waits_sets(ns, owner)
  local tail = owner[1] .. ':' .. owner[2] .. ':'
  local sets = {ns .. ':waits:user:' .. tail .. dashed(owner) .. ':' .. owner[4]}
  local team = scoped_team(owner)
  if team then sets[2] = ns .. ':scoped-waits:user:' .. tail .. team .. ':' .. owner[4] end
  return sets
end
local function scope_entries(ns, owner, hash)
  local tail = owner[1] .. ':' .. owner[2] .. ':'
  local entries = {ns .. ':waits:scope:' .. tail .. dashed(owner) .. ':' .. owner[4] .. ':' .. hash}
  local team = scoped_team(owner)
  if team then
    entries[2] = ns .. ':scoped-waits:scope:' .. tail .. team .. ':' .. owner[4] .. ':' .. hash
  end
  return entries
end
local function unlist(ns, owner, key)
  for _, set in ipairs(waits_sets(ns, owner)) do redis.call('SREM', set, key) end
end
-- The key whose wait of owner is at hash, or nil. Entries whose session is gone or is another
-- user's are cleaned, as greentic 0.4.7's reads do; an entry of the other scope sharing
-- greentic's key is that scope's, and stays.
--
-- greentic's entry holding a key that is gone means someone wrote it after our own entry was
-- (our register cleans it first), and only a Rust runner (or the other scope sharing it) does:
-- it took the scope over, so our entry's key lost the wait then, and is cleaned with it.
local function pointed(ns, owner, hash)
  local sets = waits_sets(ns, owner)
  local superseded = false
  for i, entry in ipairs(scope_entries(ns, owner, hash)) do
    local key = redis.call('GET', entry)
    if key then
      local found = live_owner(ns, key)
      if found and same_owner(found, owner) and not superseded then return key end
      if not found then
        del_if(entry, key)
        unlist(ns, owner, key)
        superseded = i == 1
      elseif superseded then
        del_if(entry, key)
        redis.call('DEL', ns .. ':wait:' .. key)
        unlist(ns, owner, key)
      elseif i > 1 or not shares_keys(found, owner) then
        del_if(entry, key)
        redis.call('SREM', sets[i], key)
      end
    end
  end
  return nil
end
-- The live wait keys of owner (unsorted), cleaning members whose session is gone, is another
-- user's, or whose wait another key took over.
local function live_waits(ns, owner)
  local sets = waits_sets(ns, owner)
  local seen, keys = {}, {}
  for i, set in ipairs(sets) do
    for _, key in ipairs(redis.call('SMEMBERS', set)) do
      if not seen[key] then
        seen[key] = true
        local found = live_owner(ns, key)
        if not found then
          unlist(ns, owner, key)
        elseif same_owner(found, owner) then
          -- A Rust-written wait has no marker: its SET membership is all greentic keeps.
          local hash = redis.call('GET', ns .. ':wait:' .. key)
          if not hash or pointed(ns, owner, hash) == key then
            keys[#keys + 1] = key
          elseif i == 1 then
            -- Back in greentic's SET though its marked scope moved on (our takeovers unlist
            -- both SETs): a Rust runner removed the key and registered it again. Its marker,
            -- which Rust does not know, is stale; its wait is now a Rust-written one.
            redis.call('DEL', ns .. ':wait:' .. key)
            keys[#keys + 1] = key
          else
            unlist(ns, owner, key)
            redis.call('DEL', ns .. ':wait:' .. key)
          end
        elseif i > 1 or not shares_keys(found, owner) then
          redis.call('SREM', set, key)
        end
      end
    end
  end
  return keys
end
-- Delete key's place in its user's waits, then the scope entries of its wait that still point
-- at it, then its marker. Run as steps (redis_steps), that order keeps every stop readable: a
-- key left in greentic's SET without its entries would read as re-registered by a Rust runner
-- (see live_waits); one left at its entries is still found there, so a retry completes.
local function unwait(ns, key, owner)
  local marker = ns .. ':wait:' .. key
  local hash = redis.call('GET', marker)
  if owner and owner[4] ~= cjson.null then
    unlist(ns, owner, key)
    if hash then
      for _, entry in ipairs(scope_entries(ns, owner, hash)) do
        del_if(entry, key)
      end
    end
  end
  redis.call('DEL', marker)
end
-- Delete a session and everything of it: its owner, the lookups and scope entries that point at
-- it (greentic's lookup also when it does: it was then the owner's newest, whoever wrote it),
-- its wait marker, and its place in its user's waits. Run as steps on a cluster (redis_steps),
-- the wait's scope entries go before the session: greentic's entry left pointing at a gone
-- session would read as a Rust runner's takeover (see pointed) and end the other scope's wait.
-- A stop after them leaves the session live but no longer waiting, until removed or expired.
local function drop(ns, key)
  local session, owner_name = ns .. ':session:' .. key, ns .. ':owner:' .. key
  local owner = owner_of(session, owner_name)
  unwait(ns, key, owner)
  redis.call('DEL', session, owner_name)
  if not owner or owner[4] == cjson.null then return end
  local lookup = lookup_key(ns, owner)
  local newest = redis.call('GET', lookup) == key
  if newest then del_if(lookup, key) end
  local scoped = scoped_key(ns, owner)
  if scoped then
    if newest then redis.call('DEL', scoped) else del_if(scoped, key) end
  end
  unlist(ns, owner, key)
end
-- 'ok' if data with env, tenant, team and user ('' for none) may replace the stored session's
-- (greentic's ensure_ctx_preserved), else the part that changed. The user is compared with the
-- stored data's: it may not change, be dropped or be introduced, whoever the owner says.
local function ctx_change(session, owner_name, stored, env, tenant, team, user)
  local owner = owner_of(session, owner_name)
  if not owner then return 'not_found' end  -- removed since read (only as steps)
  local owner_team = owner[3]
  if owner_team == cjson.null then owner_team = '' end
  if owner[1] ~= env or owner[2] ~= tenant then return 'env/tenant' end
  if owner_team ~= team then return 'team' end
  local ctx = stored_table(session, stored)['tenant_ctx']
  if type(ctx) ~= 'table' then error({err = 'CORRUPT ' .. cjson.encode(session)}) end
  local stored_user = pick(ctx['user_id'], ctx['user'])
  if stored_user == cjson.null then stored_user = '' end
  if stored_user == '' and user ~= '' then return 'introduced' end
  if user ~= stored_user then return 'user' end
  return 'ok'
end
"""


def _script(body: str) -> str:
    return _COMMON + body


# ARGV: ns, key, data, owner JSON, "1" to point the owner's lookup here, scope_hash or "",
# expiry time (unix ms, PEXPIREAT's) or "". A new session (create) or a copied one (import).
STORE: Final = _script("""
local ns, key = ARGV[1], ARGV[2]
local owner = cjson.decode(ARGV[4])
local names = {ns .. ':session:' .. key, ns .. ':owner:' .. key}
redis.call('SET', names[1], ARGV[3])
redis.call('SET', names[2], ARGV[4])
if ARGV[5] == '1' then point(ns, owner, key) end
if ARGV[6] ~= '' then
  names[3] = ns .. ':wait:' .. key
  redis.call('SET', names[3], ARGV[6])
  for _, set in ipairs(waits_sets(ns, owner)) do redis.call('SADD', set, key) end
  for _, entry in ipairs(scope_entries(ns, owner, ARGV[6])) do
    redis.call('SET', entry, key)
    names[#names + 1] = entry
  end
end
if ARGV[7] ~= '' then
  for _, name in ipairs(names) do redis.call('PEXPIREAT', name, ARGV[7]) end
end
return 'ok'
""")

# ARGV: ns, key, data, env, tenant_id, team or "", user or "". KEEPTTL: an update keeps the
# session's TTL (greentic 0.4.7's Redis store drops it with a plain SET: not copied), and its
# wait. Only data that names the user points its lookup here.
UPDATE: Final = _script("""
local ns, key = ARGV[1], ARGV[2]
local session, owner_name = ns .. ':session:' .. key, ns .. ':owner:' .. key
local stored = redis.call('GET', session)
if not stored then return 'not_found' end
local change = ctx_change(session, owner_name, stored, ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if change ~= 'ok' then return change end
-- XX: run as steps, a remove between the GET and here must not be undone by a new key.
if not redis.call('SET', session, ARGV[3], 'XX', 'KEEPTTL') then return 'not_found' end
local owner = owner_of(session, owner_name)
if ARGV[7] ~= '' and owner then point(ns, owner, key) end
return 'ok'
""")

# ARGV: ns, key.
REMOVE: Final = _script("""
if redis.call('EXISTS', ARGV[1] .. ':session:' .. ARGV[2]) == 0 then return 'not_found' end
drop(ARGV[1], ARGV[2])
return 'ok'
""")

# ARGV: ns, env, tenant_id, team or "", user, "1" to answer from the user's waits when no
# lookup does. Returns {'found', key, data}, {'waits', key, key} (several: the caller refuses),
# or nil; cleans dangling entries. greentic's lookup holds the newest session written by
# anyone (a 0.4.3 runner writes only it), so it answers when its session is this scope's;
# otherwise it belongs to the other scope sharing it, and this scope's own entry answers.
FIND: Final = _script("""
local ns = ARGV[1]
local wanted = {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
if wanted[3] == '' then wanted[3] = cjson.null end
local function candidate(entry)
  local key = redis.call('GET', entry)
  if not key then return nil end
  local session = ns .. ':session:' .. key
  local data = redis.call('GET', session)
  -- As steps, the session may go between the two reads: then the entry is as dangling.
  local owner = data and owner_of(session, ns .. ':owner:' .. key)
  if not owner then
    del_if(entry, key)
    return nil
  end
  if owned_by(owner, ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then
    return {'found', key, data}
  end
  return nil
end
local found = candidate(lookup_key(ns, wanted))
if found then return found end
local scoped = scoped_key(ns, wanted)
if scoped then found = candidate(scoped) end
if found or ARGV[6] ~= '1' then return found end
local waits = live_waits(ns, wanted)
if #waits == 0 then return nil end
if #waits > 1 then return {'waits', waits[1], waits[2]} end  -- two say 'several'
return {'found', waits[1], redis.call('GET', ns .. ':session:' .. waits[1])}
""")

# ARGV: ns, key, data, owner JSON, scope_hash, TTL ms or "", env, tenant_id, team or "", user.
# Over a live key the update rules apply and its old scope entry goes if it still points at it;
# a different key at the scope leaves the user's waits (its session and TTL stay). A plain SET
# drops any TTL, so no TTL needs no PERSIST.
REGISTER: Final = _script("""
local ns, key, hash = ARGV[1], ARGV[2], ARGV[5]
local owner = cjson.decode(ARGV[4])
local session, owner_name, marker = ns .. ':session:' .. key, ns .. ':owner:' .. key, ns .. ':wait:' .. key
local stored = redis.call('GET', session)
if stored then
  local change = ctx_change(session, owner_name, stored, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
  if change ~= 'ok' then return change end
  unwait(ns, key, owner_of(session, owner_name))
end
local taken = pointed(ns, owner, hash)
if taken and taken ~= key then
  unlist(ns, owner, taken)
  redis.call('DEL', ns .. ':wait:' .. taken)
end
local names = {session, owner_name, marker}
redis.call('SET', session, ARGV[3])
redis.call('SET', owner_name, ARGV[4])
redis.call('SET', marker, hash)
for _, set in ipairs(waits_sets(ns, owner)) do redis.call('SADD', set, key) end
for _, entry in ipairs(scope_entries(ns, owner, hash)) do
  redis.call('SET', entry, key)
  names[#names + 1] = entry
end
if ARGV[6] ~= '' then
  for _, name in ipairs(names) do redis.call('PEXPIRE', name, ARGV[6]) end
end
return 'ok'
""")

# ARGV: ns, owner JSON, scope_hash. The key of the live wait there, or nil.
FIND_WAIT: Final = _script("""
return pointed(ARGV[1], cjson.decode(ARGV[2]), ARGV[3])
""")

# ARGV: ns, owner JSON. The keys of the owner's live waits (unsorted).
LIST_WAITS: Final = _script("""
return live_waits(ARGV[1], cjson.decode(ARGV[2]))
""")

# ARGV: ns, owner JSON, scope_hash. Deletes the wait there and its session, if any.
CLEAR_WAIT: Final = _script("""
local key = pointed(ARGV[1], cjson.decode(ARGV[2]), ARGV[3])
if key then drop(ARGV[1], key) end
return 'ok'
""")

# KEYS: one SET of wait keys; ARGV: ns. Removes the members whose session is gone; their count.
PRUNE_WAITS: Final = _script("""
local pruned = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':session:' .. key) == 0 then
    redis.call('SREM', KEYS[1], key)
    pruned = pruned + 1
  end
end
return pruned
""")

# ARGV: ns, key, a scope_hash whose greentic entry held the key, or "". {data, owner JSON or '',
# wait hash or '', PEXPIRETIME} of a live session, or nil. The wait is the marker's hash (else,
# for a Rust-written wait, which has none, the hash given) while its scope entry points at the key.
DESCRIBE: Final = _script("""
local ns, key = ARGV[1], ARGV[2]
local session, owner_name = ns .. ':session:' .. key, ns .. ':owner:' .. key
local data = redis.call('GET', session)
if not data then return nil end
local owner = owner_of(session, owner_name)
if not owner then return nil end  -- removed since read (only as steps)
-- A marker whose entry moved on is stale (see live_waits): then greentic's entry, if any, is the wait.
local hash = ''
if owner[4] ~= cjson.null then
  for _, candidate in ipairs({redis.call('GET', ns .. ':wait:' .. key) or '', ARGV[3]}) do
    if hash == '' and candidate ~= '' and pointed(ns, owner, candidate) == key then hash = candidate end
  end
end
return {data, redis.call('GET', owner_name) or '', hash, redis.call('PEXPIRETIME', session)}
""")
