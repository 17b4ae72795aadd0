-- pcapcast.lua -- Wireshark dissector for pcapcast captures (LINKTYPE_USER0).
--
-- Captures are classic pcap files with link type LINKTYPE_USER0 (DLT 147).
-- Two framings of the record payload exist; this dissector reads both and
-- tells them apart record by record (see "Telling the framings apart" below).
--
-- 1. Seed framing (pcapcast's default, the original Go capture's):
--
--   +------------------+------------------------------------------------+
--   | path (u16, LE)   | IPv4 / IPv6 packet (path 254: a disco frame)   |
--   +------------------+------------------------------------------------+
--
-- 2. Tailscale's current framing (pcapcast's format=tailscale, Tailscale's
--    capture since 2023-03):
--
--   +----------------+----------+----------+----------+----------+--------+
--   | path (u16, LE) | snat_len | snat IP  | dnat_len | dnat IP  | packet |
--   |                | u8 0/4/16| snat_len | u8 0/4/16| dnat_len |        |
--   +----------------+----------+----------+----------+----------+--------+
--
--   snat IP is the source before SNAT, dnat IP the destination before DNAT;
--   ports are not written, and there is no version marker. For path 254 the
--   packet is a disco frame.
--
-- Disco frame (path 254, either framing):
--
--   flag u8 (bit 0: came through DERP), DERP node public key (32 bytes, zeros
--   when not through DERP), source port u16 LE, addr_len u16 LE (4 or 16),
--   source address, payload_len u16 LE, then the decrypted disco message:
--   type u8 (1 ping, 2 pong, 3 call-me-maybe), version u8, body.
--     ping:          txid (12), node key (32), maybe padding
--     pong:          txid (12), source IP (16, IPv6 or v4-mapped), port u16 BE
--     call-me-maybe: endpoints, 18 bytes each (16-byte IP, port u16 BE)
--
-- Path values:
--   0   FromLocal            Local -> Peer
--   1   FromPeer             Peer -> Local
--   2   SynthesizedToLocal   synthesized, to Local
--   3   SynthesizedToPeer    synthesized, to Peer
--   254 Disco                discovery frame
--
-- Load it with:  tshark -X lua_script:dissector/pcapcast.lua -r capture.pcap
-- or copy it into ~/.local/lib/wireshark/plugins/ (or run
-- `pcapcast dissector --install`).
--
-- Written for Wireshark 4.0 (Lua 5.2); it only uses long-standing Lua APIs.
-- The dissector never raises a Lua error for short, cut (snaplen), empty or
-- malformed records: it reads only the bytes that were captured and reports
-- everything odd with expert info instead.

local PLUGIN_VERSION = "0.2.0"

if set_plugin_info then
    set_plugin_info({
        version = PLUGIN_VERSION,
        description = "pcapcast (seed and Tailscale framing, LINKTYPE_USER0) dissector",
        repository = "pcapcast",
    })
end

-- Guard against being loaded twice (e.g. installed as a plugin *and* passed
-- with -X lua_script:). Proto() raises on a duplicate name; in that case the
-- first copy stays registered and this one quietly does nothing.
local ok, pcapcast = pcall(Proto, "pcapcast", "pcapcast capture path")
if not ok then
    if warn then
        warn("pcapcast.lua: protocol 'pcapcast' is already registered; skipping this copy")
    end
    return
end

-------------------------------------------------------------------------------
-- Path table
-------------------------------------------------------------------------------

local PATH_DISCO = 254

local path_names = {
    [0] = "FromLocal",
    [1] = "FromPeer",
    [2] = "SynthesizedToLocal",
    [3] = "SynthesizedToPeer",
    [PATH_DISCO] = "Disco",
}

local path_descriptions = {
    [0] = "Local -> Peer",
    [1] = "Peer -> Local",
    [2] = "synthesized, to Local",
    [3] = "synthesized, to Peer",
    [PATH_DISCO] = "discovery frame",
}

local function path_name(path)
    return path_names[path] or string.format("Unknown (%d)", path)
end

local function path_description(path)
    return path_descriptions[path] or "unknown path"
end

local FRAMING_SEED = "seed"
local FRAMING_TAILSCALE = "tailscale"

-- Disco frame layout.
local DISCO_KEY_LEN = 32
local DISCO_FIXED = 1 + DISCO_KEY_LEN + 2 + 2 -- flag, key, port, addr_len
local DISCO_VIA_DERP = 0x01

local disco_types = {
    [1] = "ping",
    [2] = "pong",
    [3] = "call-me-maybe",
}

local TXID_LEN = 12
local NODE_KEY_LEN = 32
local ENDPOINT_LEN = 18

-------------------------------------------------------------------------------
-- Fields and expert info
-------------------------------------------------------------------------------

local f_path = ProtoField.uint16("pcapcast.path", "Path", base.DEC, path_names,
    nil, "Capture path (u16, little-endian)")
local f_path_name = ProtoField.string("pcapcast.path_name", "Path name",
    base.ASCII, "Name of the capture path")
local f_direction = ProtoField.string("pcapcast.direction", "Direction",
    base.ASCII, "Direction / description of the capture path")
local f_ip_version = ProtoField.uint8("pcapcast.ip_version", "IP version",
    base.DEC, nil, nil, "Version nibble of the packet's first byte")
local f_payload_len = ProtoField.uint32("pcapcast.payload_len", "Payload length",
    base.DEC, nil, nil, "Bytes following the 2-byte path")
local f_framing = ProtoField.string("pcapcast.framing", "Framing",
    base.ASCII, "Record framing: seed (path, packet) or tailscale (path, NAT addresses, packet)")

local f_snat_len = ProtoField.uint8("pcapcast.snat_len", "SNAT address length",
    base.DEC, nil, nil, "Bytes of the source address before SNAT (0, 4 or 16)")
local f_snat_ip = ProtoField.ipv4("pcapcast.snat_ip", "Source before SNAT",
    "IPv4 source address before SNAT")
local f_snat_ipv6 = ProtoField.ipv6("pcapcast.snat_ipv6", "Source before SNAT (IPv6)",
    "IPv6 source address before SNAT")
local f_dnat_len = ProtoField.uint8("pcapcast.dnat_len", "DNAT address length",
    base.DEC, nil, nil, "Bytes of the destination address before DNAT (0, 4 or 16)")
local f_dnat_ip = ProtoField.ipv4("pcapcast.dnat_ip", "Destination before DNAT",
    "IPv4 destination address before DNAT")
local f_dnat_ipv6 = ProtoField.ipv6("pcapcast.dnat_ipv6", "Destination before DNAT (IPv6)",
    "IPv6 destination address before DNAT")

local f_disco_flags = ProtoField.uint8("pcapcast.disco.flags", "Disco flags",
    base.HEX, nil, nil, "Disco frame flags")
local f_disco_derp = ProtoField.bool("pcapcast.disco.derp", "Via DERP", 8,
    nil, DISCO_VIA_DERP, "The frame came through a DERP relay (flag bit 0)")
local f_disco_derp_key = ProtoField.bytes("pcapcast.disco.derp_key", "DERP node key",
    base.NONE, "Public key of the DERP node (zeros when not through DERP)")
local f_disco_src_port = ProtoField.uint16("pcapcast.disco.src_port", "Source port",
    base.DEC, nil, nil, "Source port (the DERP region when through DERP)")
local f_disco_addr_len = ProtoField.uint16("pcapcast.disco.addr_len", "Address length",
    base.DEC, nil, nil, "Bytes of the source address (4 or 16)")
local f_disco_src_ip = ProtoField.ipv4("pcapcast.disco.src_ip", "Source address",
    "IPv4 source address (127.3.3.40 when through DERP)")
local f_disco_src_ipv6 = ProtoField.ipv6("pcapcast.disco.src_ipv6", "Source address (IPv6)",
    "IPv6 source address")
local f_disco_len = ProtoField.uint16("pcapcast.disco.len", "Message length",
    base.DEC, nil, nil, "Bytes of the decrypted disco message (payload_len)")
local f_disco_type = ProtoField.uint8("pcapcast.disco.type", "Message type",
    base.DEC, disco_types, nil, "Disco message type")
local f_disco_version = ProtoField.uint8("pcapcast.disco.version", "Message version",
    base.DEC, nil, nil, "Disco message version")
local f_disco_txid = ProtoField.bytes("pcapcast.disco.txid", "Transaction ID",
    base.NONE, "Ping/pong transaction ID (12 bytes)")
local f_disco_node_key = ProtoField.bytes("pcapcast.disco.node_key", "Node key",
    base.NONE, "Sender's node public key (ping)")
local f_disco_pong_src = ProtoField.ipv6("pcapcast.disco.pong_src", "Pong source",
    "Where the pinged node saw the ping come from (IPv6 or v4-mapped)")
local f_disco_pong_src_port = ProtoField.uint16("pcapcast.disco.pong_src_port",
    "Pong source port", base.DEC, nil, nil, "Port of the pong source (big-endian)")
local f_disco_endpoint = ProtoField.ipv6("pcapcast.disco.endpoint", "Endpoint",
    "Call-me-maybe endpoint address (IPv6 or v4-mapped)")
local f_disco_endpoint_port = ProtoField.uint16("pcapcast.disco.endpoint_port",
    "Endpoint port", base.DEC, nil, nil, "Call-me-maybe endpoint port (big-endian)")
local f_disco_body = ProtoField.bytes("pcapcast.disco.body", "Message body",
    base.NONE, "Message bytes not decoded further (unknown type, padding)")

pcapcast.fields = {
    f_path, f_path_name, f_direction, f_ip_version, f_payload_len, f_framing,
    f_snat_len, f_snat_ip, f_snat_ipv6, f_dnat_len, f_dnat_ip, f_dnat_ipv6,
    f_disco_flags, f_disco_derp, f_disco_derp_key, f_disco_src_port,
    f_disco_addr_len, f_disco_src_ip, f_disco_src_ipv6, f_disco_len,
    f_disco_type, f_disco_version, f_disco_txid, f_disco_node_key,
    f_disco_pong_src, f_disco_pong_src_port, f_disco_endpoint,
    f_disco_endpoint_port, f_disco_body,
}

local ef_short = ProtoExpert.new("pcapcast.short_record",
    "Record too short for the 2-byte path",
    expert.group.PROTOCOL, expert.severity.WARN)
local ef_empty = ProtoExpert.new("pcapcast.empty_payload",
    "Record has no payload after the path",
    expert.group.PROTOCOL, expert.severity.NOTE)
local ef_unknown_path = ProtoExpert.new("pcapcast.unknown_path",
    "Unknown path value",
    expert.group.PROTOCOL, expert.severity.NOTE)
local ef_not_ip = ProtoExpert.new("pcapcast.not_ip",
    "Payload is not IPv4 or IPv6 (unknown version nibble)",
    expert.group.PROTOCOL, expert.severity.NOTE)
local ef_short_ip = ProtoExpert.new("pcapcast.short_ip",
    "Payload too short for an IP header",
    expert.group.PROTOCOL, expert.severity.WARN)
local ef_framing = ProtoExpert.new("pcapcast.framing_undetermined",
    "Framing could not be determined",
    expert.group.PROTOCOL, expert.severity.NOTE)
local ef_cut = ProtoExpert.new("pcapcast.cut",
    "Record cut short by the snaplen",
    expert.group.MALFORMED, expert.severity.WARN)
local ef_bad_nat_len = ProtoExpert.new("pcapcast.bad_nat_len",
    "NAT address length is not 0, 4 or 16",
    expert.group.MALFORMED, expert.severity.WARN)
local ef_empty_packet = ProtoExpert.new("pcapcast.empty_packet",
    "Record has no packet after the Tailscale prefix",
    expert.group.PROTOCOL, expert.severity.NOTE)
local ef_disco_malformed = ProtoExpert.new("pcapcast.disco.malformed",
    "Malformed disco frame",
    expert.group.MALFORMED, expert.severity.WARN)
local ef_disco_cut = ProtoExpert.new("pcapcast.disco.cut",
    "Disco frame cut short",
    expert.group.MALFORMED, expert.severity.WARN)
local ef_disco_unknown = ProtoExpert.new("pcapcast.disco.unknown_type",
    "Unknown disco message type",
    expert.group.PROTOCOL, expert.severity.NOTE)

pcapcast.experts = {
    ef_short, ef_empty, ef_unknown_path, ef_not_ip, ef_short_ip, ef_framing,
    ef_cut, ef_bad_nat_len, ef_empty_packet, ef_disco_malformed, ef_disco_cut,
    ef_disco_unknown,
}

-------------------------------------------------------------------------------
-- Sub-dissectors (looked up once, lazily, so a missing one cannot break load)
-------------------------------------------------------------------------------

local handles = nil

local function get_handles()
    if handles == nil then
        local function try(name)
            local okd, h = pcall(Dissector.get, name)
            if okd then return h end
            return nil
        end
        handles = { ip = try("ip"), ipv6 = try("ipv6"), data = try("data") }
    end
    return handles
end

-- Call a sub-dissector without ever letting an error escape into this one.
local function call_sub(handle, tvb, pinfo, tree)
    if handle == nil or tvb == nil then return end
    pcall(function() handle:call(tvb, pinfo, tree) end)
end

-------------------------------------------------------------------------------
-- Small helpers. Every read goes through these and checks the captured length
-- (tvb:len()) first; tvb:reported_len() is the record's original length.
-------------------------------------------------------------------------------

local function plural(n, word)
    return string.format("%d %s%s", n, word, n == 1 and "" or "s")
end

local function u8_at(tvb, off)
    if off + 1 > tvb:len() then return nil end
    return tvb:range(off, 1):uint()
end

local function u16le_at(tvb, off)
    if off + 2 > tvb:len() then return nil end
    return tvb:range(off, 2):le_uint()
end

local function is_addr_len(n)
    return n == 0 or n == 4 or n == 16
end

-- The captured bytes of [off, off + n), or nil when none of them was captured.
local function captured_range(tvb, off, n)
    local avail = tvb:len() - off
    if avail <= 0 or n <= 0 then return nil end
    if n > avail then n = avail end
    return tvb:range(off, n)
end

-- "1.2.3.4:5" or "[fd7a::1]:5" from the captured address and port, or nil.
local function format_endpoint(tvb, off, len, port)
    local okf, text = pcall(function()
        if len == 4 then
            return tostring(tvb:range(off, 4):ipv4())
        end
        return tostring(tvb:range(off, 16):ipv6())
    end)
    if not okf then return nil end
    if port == nil then return text end
    if len == 16 then text = "[" .. text .. "]" end
    return string.format("%s:%d", text, port)
end

-------------------------------------------------------------------------------
-- Telling the framings apart (per record; nothing in the file says which).
--
-- The rule, for a record whose payload after the 2-byte path is P:
--
-- * Nothing after the path: an original length of 2 is the seed framing (an
--   empty packet; Tailscale's framing always writes at least 4 bytes). A
--   record cut by the snaplen right after the path is undetermined: no
--   pcapcast.framing field, an expert note.
--
-- * Paths other than 254 (IP paths, unknown paths): a seed record starts P
--   with an IP header, first byte 0x4X or 0x6X; a Tailscale record starts it
--   with snat_len, 0x00, 0x04 or 0x10. Those never overlap. It is Tailscale's
--   framing when P[0] is 0, 4 or 16, the original length has room for
--   snat_len + address + dnat_len, and dnat_len, if it was captured, is 0, 4
--   or 16 and the original length has room for its address; otherwise it is
--   the seed framing (with a payload that is IP or shown as data).
--
-- * Path 254 (Disco): both readings can start alike (a seed disco frame
--   starts with its flag, 0 or 1, so 00 00 can be a seed frame or an empty
--   Tailscale prefix). Each reading is judged by its disco frame's length
--   fields: it "fits" when addr_len is 4 or 16 and flag + key + port +
--   addr_len + address + payload_len + payload_len bytes add up to exactly the
--   record's original length (the Tailscale reading also needs valid snat_len
--   and dnat_len first); it is "excluded" when a captured field contradicts
--   that; it is "undecided" when the record was cut (snaplen) before all those
--   fields could be read. The choice, first match wins:
--     1. Tailscale fits                          -> tailscale
--     2. seed fits                               -> seed
--     3. Tailscale undecided (record cut short)  -> tailscale
--     4. seed undecided                          -> seed
--     5. both excluded (a malformed frame): the reading whose frame gets
--        further (a valid addr_len beats an invalid one), Tailscale on a tie
--        if its snat/dnat prefix is valid, else seed; the frame is then
--        decoded as far as it goes and flagged malformed.
--   So Tailscale wins when both fit and when the record was cut short.
-------------------------------------------------------------------------------

local FITS, UNDECIDED, EXCLUDED = 1, 2, 3

-- Judges a disco frame starting at off against the record's lengths. The
-- second result, for EXCLUDED, is how far the frame got: 0 (the record is
-- too short for any frame), 1 (addr_len is not 4 or 16), 2 (payload_len
-- does not match the record's length).
local function judge_disco(tvb, off)
    local rep = tvb:reported_len()
    -- The shortest frame: fixed fields, an IPv4 address, payload_len, no message.
    if rep < off + DISCO_FIXED + 4 + 2 then return EXCLUDED, 0 end
    local addr_len = u16le_at(tvb, off + DISCO_FIXED - 2)
    if addr_len == nil then return UNDECIDED, 0 end
    if addr_len ~= 4 and addr_len ~= 16 then return EXCLUDED, 1 end
    local pl_off = off + DISCO_FIXED + addr_len
    if rep < pl_off + 2 then return EXCLUDED, 1 end
    local payload_len = u16le_at(tvb, pl_off)
    if payload_len == nil then return UNDECIDED, 0 end
    if rep ~= pl_off + 2 + payload_len then return EXCLUDED, 2 end
    return FITS, 0
end

-- Judges the Tailscale prefix: returns the verdict on the prefix alone
-- (FITS = both lengths captured and valid) and, when it fits, the offset of
-- the packet after it.
local function judge_tailscale_prefix(tvb)
    local rep = tvb:reported_len()
    local snat_len = u8_at(tvb, 2)
    if snat_len == nil then return UNDECIDED, nil end
    if not is_addr_len(snat_len) or rep < 4 + snat_len then return EXCLUDED, nil end
    local dnat_len = u8_at(tvb, 3 + snat_len)
    if dnat_len == nil then return UNDECIDED, nil end
    if not is_addr_len(dnat_len) or rep < 4 + snat_len + dnat_len then
        return EXCLUDED, nil
    end
    return FITS, 4 + snat_len + dnat_len
end

-- The framing of a record of 3 or more captured bytes (see the rule above).
local function framing_of(tvb, path)
    local prefix, packet_off = judge_tailscale_prefix(tvb)
    if path ~= PATH_DISCO then
        local first = u8_at(tvb, 2)
        local nibble = bit32.rshift(first, 4)
        if nibble == 4 or nibble == 6 then return FRAMING_SEED end
        if prefix == EXCLUDED then return FRAMING_SEED end
        return FRAMING_TAILSCALE
    end
    local ts, ts_depth = prefix, 0
    if prefix == FITS then ts, ts_depth = judge_disco(tvb, packet_off) end
    local seed, seed_depth = judge_disco(tvb, 2)
    if ts == FITS then return FRAMING_TAILSCALE end
    if seed == FITS then return FRAMING_SEED end
    if ts == UNDECIDED then return FRAMING_TAILSCALE end
    if seed == UNDECIDED then return FRAMING_SEED end
    -- Both excluded: the reading whose frame got further; Tailscale on a tie,
    -- if its prefix is valid.
    if prefix == FITS and ts_depth >= seed_depth then return FRAMING_TAILSCALE end
    return FRAMING_SEED
end

-------------------------------------------------------------------------------
-- Tailscale prefix
-------------------------------------------------------------------------------

-- Adds one NAT address (length byte at off); returns the offset after it, or
-- nil when the record ends (or is cut) inside it or its length is invalid.
local function add_nat_address(tvb, subtree, off, f_len, f_v4, f_v6, what)
    local n = u8_at(tvb, off)
    if n == nil then
        subtree:add_proto_expert_info(ef_cut,
            string.format("Record cut before the %s address length", what))
        return nil
    end
    local len_item = subtree:add(f_len, tvb:range(off, 1))
    if not is_addr_len(n) then
        len_item:add_proto_expert_info(ef_bad_nat_len,
            string.format("%s address length %d is not 0, 4 or 16", what, n))
        return nil
    end
    if n == 0 then return off + 1 end
    if off + 1 + n > tvb:len() then
        local part = captured_range(tvb, off + 1, n)
        local item = part and subtree:add(part,
            string.format("%s address (cut: %d of %d bytes)", what,
                tvb:len() - off - 1, n)) or subtree
        item:add_proto_expert_info(ef_cut,
            string.format("Record cut inside the %s address", what))
        return nil
    end
    local range = tvb:range(off + 1, n)
    if n == 4 then
        subtree:add(f_v4, range)
    else
        subtree:add(f_v6, range)
    end
    subtree:append_text(string.format(", %s %s", what, format_endpoint(tvb, off + 1, n) or "?"))
    return off + 1 + n
end

-------------------------------------------------------------------------------
-- Disco frames
-------------------------------------------------------------------------------

-- Decodes the disco message body of type mtype, from off, len captured bytes.
-- snap_cut: the record was cut by the snaplen before the body's end, so a
-- body that ends early was cut, not malformed.
local function add_disco_body(tvb, mtree, off, len, mtype, snap_cut)
    local function cut(what)
        if snap_cut then
            mtree:add_proto_expert_info(ef_disco_cut,
                string.format("Disco message cut short in the %s", what))
        else
            mtree:add_proto_expert_info(ef_disco_malformed,
                string.format("Disco %s too short: it ends in the %s",
                    disco_types[mtype] or "message", what))
        end
    end
    if mtype == 1 then -- ping
        if len < TXID_LEN then return cut("txid") end
        mtree:add(f_disco_txid, tvb:range(off, TXID_LEN))
        if len < TXID_LEN + NODE_KEY_LEN then return cut("node key") end
        mtree:add(f_disco_node_key, tvb:range(off + TXID_LEN, NODE_KEY_LEN))
        local rest = len - TXID_LEN - NODE_KEY_LEN
        if rest > 0 then
            mtree:add(f_disco_body, tvb:range(off + TXID_LEN + NODE_KEY_LEN, rest))
                :append_text(" (padding)")
        end
    elseif mtype == 2 then -- pong
        if len < TXID_LEN then return cut("txid") end
        mtree:add(f_disco_txid, tvb:range(off, TXID_LEN))
        if len < TXID_LEN + 16 then return cut("pong source") end
        mtree:add(f_disco_pong_src, tvb:range(off + TXID_LEN, 16))
        if len < TXID_LEN + 18 then return cut("pong source port") end
        mtree:add(f_disco_pong_src_port, tvb:range(off + TXID_LEN + 16, 2))
        local rest = len - TXID_LEN - 18
        if rest > 0 then
            mtree:add(f_disco_body, tvb:range(off + TXID_LEN + 18, rest))
                :append_text(" (trailing)")
        end
    elseif mtype == 3 then -- call-me-maybe
        local at, count = off, 0
        while at + ENDPOINT_LEN <= off + len do
            local ep = mtree:add(tvb:range(at, ENDPOINT_LEN),
                string.format("Endpoint %d", count + 1))
            ep:add(f_disco_endpoint, tvb:range(at, 16))
            ep:add(f_disco_endpoint_port, tvb:range(at + 16, 2))
            ep:append_text(": " .. (format_endpoint(tvb, at, 16,
                tvb:range(at + 16, 2):uint()) or "?"))
            at = at + ENDPOINT_LEN
            count = count + 1
        end
        local rest = off + len - at
        if rest > 0 then
            local item = mtree:add(f_disco_body, tvb:range(at, rest))
            if snap_cut then
                cut("endpoint list")
            else
                item:add_proto_expert_info(ef_disco_malformed,
                    string.format("%s after the last whole endpoint", plural(rest, "byte")))
            end
        end
    elseif len > 0 then
        mtree:add(f_disco_body, tvb:range(off, len))
    end
end

-- Decodes a disco frame at off; returns a short text for the Info column.
local function add_disco(tvb, subtree, off)
    local cap, rep = tvb:len(), tvb:reported_len()
    local dtree = subtree:add(tvb:range(off, cap - off), "Disco frame")

    -- Every read below checks the captured length; when a field is missing,
    -- the snaplen cut it if the record was longer, else the frame is short.
    local function cut(what)
        if cap < rep then
            dtree:add_proto_expert_info(ef_disco_cut,
                string.format("Disco frame cut short in the %s (%s captured, %s in the record)",
                    what, plural(cap - off, "byte"), plural(rep - off, "byte")))
            return "disco frame (cut)"
        end
        dtree:add_proto_expert_info(ef_disco_malformed,
            string.format("Disco frame too short: it ends in the %s (%s)",
                what, plural(cap - off, "byte")))
        return "malformed disco frame"
    end

    local flags = u8_at(tvb, off)
    if flags == nil then return cut("flags") end
    dtree:add(f_disco_flags, tvb:range(off, 1))
    dtree:add(f_disco_derp, tvb:range(off, 1))
    local via_derp = bit32.band(flags, DISCO_VIA_DERP) ~= 0

    if off + 1 + DISCO_KEY_LEN > cap then return cut("DERP key") end
    dtree:add(f_disco_derp_key, tvb:range(off + 1, DISCO_KEY_LEN))

    local port = u16le_at(tvb, off + 1 + DISCO_KEY_LEN)
    if port == nil then return cut("source port") end
    dtree:add_le(f_disco_src_port, tvb:range(off + 1 + DISCO_KEY_LEN, 2))

    local addr_len = u16le_at(tvb, off + DISCO_FIXED - 2)
    if addr_len == nil then return cut("address length") end
    local al_item = dtree:add_le(f_disco_addr_len, tvb:range(off + DISCO_FIXED - 2, 2))
    if addr_len ~= 4 and addr_len ~= 16 then
        al_item:add_proto_expert_info(ef_disco_malformed,
            string.format("Address length %d is not 4 or 16", addr_len))
        local rest = captured_range(tvb, off + DISCO_FIXED, cap)
        if rest then dtree:add(f_disco_body, rest) end
        return "malformed disco frame"
    end

    local addr_off = off + DISCO_FIXED
    if addr_off + addr_len > cap then return cut("source address") end
    if addr_len == 4 then
        dtree:add(f_disco_src_ip, tvb:range(addr_off, 4))
    else
        dtree:add(f_disco_src_ipv6, tvb:range(addr_off, 16))
    end
    local source = format_endpoint(tvb, addr_off, addr_len, port) or "?"
    local via = via_derp and " via DERP" or ""
    dtree:append_text(string.format(", from %s%s", source, via))

    local pl_off = addr_off + addr_len
    local payload_len = u16le_at(tvb, pl_off)
    if payload_len == nil then
        cut("message length")
        return string.format("disco frame%s from %s (cut)", via, source)
    end
    local len_item = dtree:add_le(f_disco_len, tvb:range(pl_off, 2))

    local msg_off = pl_off + 2
    local in_record = rep - msg_off -- message bytes the record really had
    if payload_len > in_record then
        len_item:add_proto_expert_info(ef_disco_malformed,
            string.format("Message length %d, but the record has %s after it",
                payload_len, plural(math.max(in_record, 0), "byte")))
    elseif payload_len < in_record then
        len_item:add_proto_expert_info(ef_disco_malformed,
            string.format("%s after the message", plural(in_record - payload_len, "trailing byte")))
    end

    local msg_len = math.min(payload_len, math.max(cap - msg_off, 0))
    local mtype = u8_at(tvb, msg_off)
    if payload_len == 0 then
        dtree:add_proto_expert_info(ef_disco_malformed, "Empty disco message")
        return string.format("empty message%s from %s", via, source)
    end
    if mtype == nil then
        cut("message")
        return string.format("message%s from %s (%s)", via, source,
            cap < rep and "cut" or "missing")
    end

    local mtree = dtree:add(tvb:range(msg_off, msg_len), "Disco message")
    local type_item = mtree:add(f_disco_type, tvb:range(msg_off, 1))
    local tname = disco_types[mtype]
    if tname == nil then
        tname = string.format("type %d", mtype)
        type_item:add_proto_expert_info(ef_disco_unknown,
            string.format("Unknown disco message type %d", mtype))
    end
    mtree:append_text(": " .. tname)
    local info = string.format("%s%s from %s", tname, via, source)

    -- The snaplen cut the message (not the record's own short length).
    local snap_cut = msg_len < payload_len and cap < rep
    if msg_len < 2 then
        cut("message version")
        return info .. (snap_cut and " (cut)" or "")
    end
    mtree:add(f_disco_version, tvb:range(msg_off + 1, 1))
    add_disco_body(tvb, mtree, msg_off + 2, msg_len - 2, mtype, snap_cut)
    if snap_cut then
        info = info .. " (cut)"
    end
    return info
end

-------------------------------------------------------------------------------
-- Packet after the path (and prefix)
-------------------------------------------------------------------------------

-- Hands the IP packet at off to ip/ipv6, or shows what is there as data.
local function add_ip(tvb, pinfo, tree, subtree, off)
    local h = get_handles()
    local cap = tvb:len()
    local payload = tvb:range(off, cap - off):tvb()
    local version = bit32.rshift(tvb:range(off, 1):uint(), 4)
    subtree:add(f_ip_version, tvb:range(off, 1), version):set_generated()

    -- Anything shorter than a minimal header (judged on the original length,
    -- so snaplen-truncated packets still go to IP) is garbage, not IP.
    local reported = tvb:reported_len() - off
    local min_hdr = (version == 4 and 20) or (version == 6 and 40) or nil
    local captured = cap - off

    if min_hdr ~= nil and reported < min_hdr then
        subtree:add_proto_expert_info(ef_short_ip,
            string.format("IPv%d payload is %s, shorter than a %d-byte header; shown as data",
                version, plural(reported, "byte"), min_hdr))
        pinfo.cols.info:append(string.format("Truncated IPv%d (%s)",
            version, plural(captured, "byte")))
        call_sub(h.data, payload, pinfo, tree)
    elseif version == 4 and h.ip ~= nil then
        call_sub(h.ip, payload, pinfo, tree)
    elseif version == 6 and h.ipv6 ~= nil then
        call_sub(h.ipv6, payload, pinfo, tree)
    else
        subtree:add_proto_expert_info(ef_not_ip,
            string.format("Version nibble %d is not 4 or 6; shown as data", version))
        pinfo.cols.info:append(string.format("Non-IP payload (%s)",
            plural(captured, "byte")))
        call_sub(h.data, payload, pinfo, tree)
    end
end

-------------------------------------------------------------------------------
-- Dissector
-------------------------------------------------------------------------------

local function dissect(tvb, pinfo, tree)
    local len = tvb:len()
    local rep = tvb:reported_len()

    pinfo.cols.protocol:set("pcapcast")

    -- Records shorter than the path header: annotate and stop.
    if len < 2 then
        local item
        if len > 0 then
            item = tree:add(pcapcast, tvb:range(0, len))
        else
            item = tree:add(pcapcast)
        end
        item:append_text(string.format(", short record (%s)", plural(len, "byte")))
        item:add_proto_expert_info(ef_short,
            string.format("Record is %s, too short for the 2-byte path", plural(len, "byte")))
        pinfo.cols.info:set(string.format("Short record (%s)", plural(len, "byte")))
        if len > 0 then
            call_sub(get_handles().data, tvb:range(0, len):tvb(), pinfo, tree)
        end
        return len
    end

    local path = tvb:range(0, 2):le_uint()
    local name = path_name(path)
    local desc = path_description(path)
    local payload_len = len - 2

    local subtree = tree:add(pcapcast, tvb:range(0, len))
    if path_names[path] ~= nil then
        subtree:append_text(string.format(", Path: %s (%d), %s", name, path, desc))
    else
        subtree:append_text(string.format(", Path: %s, %s", name, desc))
    end

    local path_item = subtree:add_le(f_path, tvb:range(0, 2))
    subtree:add(f_path_name, tvb:range(0, 2), name):set_generated()
    subtree:add(f_direction, tvb:range(0, 2), desc):set_generated()
    subtree:add(f_payload_len, payload_len):set_generated()

    if path_names[path] == nil then
        path_item:add_proto_expert_info(ef_unknown_path,
            string.format("Unknown path value %d", path))
    end

    -- Info column prefix; the fence keeps it when IP/UDP/... rewrite Info.
    pinfo.cols.info:set(name .. ": ")
    pinfo.cols.info:fence()

    if payload_len <= 0 then
        if rep <= 2 then
            -- Only the seed framing writes a bare path (an empty packet).
            subtree:add(f_framing, FRAMING_SEED):set_generated()
            subtree:add_proto_expert_info(ef_empty)
            pinfo.cols.info:append("(no payload)")
        else
            subtree:add_proto_expert_info(ef_cut,
                string.format("Record cut after the path (%s in the record)",
                    plural(rep, "byte")))
            subtree:add_proto_expert_info(ef_framing,
                "Nothing after the path was captured: seed or Tailscale framing")
            pinfo.cols.info:append("(cut after the path)")
        end
        return len
    end

    local framing = framing_of(tvb, path)
    subtree:add(f_framing, framing):set_generated()
    subtree:append_text(", " .. framing .. " framing")

    local off = 2
    if framing == FRAMING_TAILSCALE then
        off = add_nat_address(tvb, subtree, 2, f_snat_len, f_snat_ip, f_snat_ipv6, "SNAT")
        if off ~= nil then
            off = add_nat_address(tvb, subtree, off, f_dnat_len, f_dnat_ip, f_dnat_ipv6, "DNAT")
        end
        if off == nil then
            pinfo.cols.info:append("(cut in the Tailscale prefix)")
            return len
        end
        if off >= len then
            if rep <= off then
                subtree:add_proto_expert_info(ef_empty_packet)
                pinfo.cols.info:append("(no packet)")
            else
                subtree:add_proto_expert_info(ef_cut,
                    string.format("Record cut after the Tailscale prefix (%s in the record)",
                        plural(rep, "byte")))
                pinfo.cols.info:append("(cut after the prefix)")
            end
            return len
        end
    end

    if path == PATH_DISCO then
        local info = add_disco(tvb, subtree, off)
        pinfo.cols.info:append(info)
        return len
    end

    add_ip(tvb, pinfo, tree, subtree, off)
    return len
end

function pcapcast.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

-------------------------------------------------------------------------------
-- Registration
-------------------------------------------------------------------------------

-- wtap_encaps is the current name of the encapsulation table; wtap is the
-- older alias the brief (and Wireshark 4.0) also provide. 45 is
-- WTAP_ENCAP_USER0 as a last resort.
local USER0 = (wtap_encaps and wtap_encaps.USER0) or (wtap and wtap.USER0) or 45

local encap_table = DissectorTable.get("wtap_encap")
encap_table:add(USER0, pcapcast)
