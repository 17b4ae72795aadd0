-- pcapcast.lua -- Wireshark dissector for pcapcast "seed format" captures.
--
-- Captures are classic pcap files with link type LINKTYPE_USER0 (DLT 147).
-- Every record payload is:
--
--   +--------+--------+------------------------------------------+
--   |  path (u16, LE)  |  IPv4 / IPv6 packet (Disco: opaque data)  |
--   +--------+--------+------------------------------------------+
--
-- Path values:
--   0   FromLocal            Local -> Peer
--   1   FromPeer             Peer -> Local
--   2   SynthesizedToLocal   synthesized, to Local
--   3   SynthesizedToPeer    synthesized, to Peer
--   254 Disco                discovery frame (not IP, shown as data)
--
-- Load it with:  tshark -X lua_script:dissector/pcapcast.lua -r capture.pcap
-- or copy it into ~/.local/lib/wireshark/plugins/ (or run
-- `pcapcast dissector --install`).
--
-- Written for Wireshark 4.0 (Lua 5.2); it only uses long-standing Lua APIs.
-- The dissector never raises a Lua error for short or malformed records: it
-- reports them with expert info instead.

local PLUGIN_VERSION = "0.1.0"

if set_plugin_info then
    set_plugin_info({
        version = PLUGIN_VERSION,
        description = "pcapcast seed-format (LINKTYPE_USER0) dissector",
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
    base.DEC, nil, nil, "Version nibble of the first payload byte")
local f_payload_len = ProtoField.uint32("pcapcast.payload_len", "Payload length",
    base.DEC, nil, nil, "Bytes following the 2-byte path")

pcapcast.fields = { f_path, f_path_name, f_direction, f_ip_version, f_payload_len }

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

pcapcast.experts = { ef_short, ef_empty, ef_unknown_path, ef_not_ip, ef_short_ip }

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
-- Dissector
-------------------------------------------------------------------------------

function pcapcast.dissector(tvb, pinfo, tree)
    local len = tvb:len()

    pinfo.cols.protocol:set("pcapcast")

    -- Records shorter than the path header: annotate and stop.
    if len < 2 then
        local item
        if len > 0 then
            item = tree:add(pcapcast, tvb:range(0, len))
        else
            item = tree:add(pcapcast)
        end
        item:append_text(string.format(", short record (%d byte%s)", len,
            len == 1 and "" or "s"))
        item:add_proto_expert_info(ef_short,
            string.format("Record is %d byte%s, too short for the 2-byte path",
                len, len == 1 and "" or "s"))
        pinfo.cols.info:set(string.format("Short record (%d byte%s)", len,
            len == 1 and "" or "s"))
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
        subtree:add_proto_expert_info(ef_empty)
        pinfo.cols.info:append("(no payload)")
        return len
    end

    local payload = tvb:range(2, payload_len):tvb()
    local h = get_handles()

    if path == PATH_DISCO then
        pinfo.cols.info:append("Disco frame")
        call_sub(h.data, payload, pinfo, tree)
        return len
    end

    local version = bit32.rshift(tvb:range(2, 1):uint(), 4)
    subtree:add(f_ip_version, tvb:range(2, 1), version):set_generated()

    -- Anything shorter than a minimal header (judged on the original length,
    -- so snaplen-truncated packets still go to IP) is garbage, not IP.
    local reported = tvb:reported_len() - 2
    local min_hdr = (version == 4 and 20) or (version == 6 and 40) or nil

    if min_hdr ~= nil and reported < min_hdr then
        subtree:add_proto_expert_info(ef_short_ip,
            string.format("IPv%d payload is %d byte%s, shorter than a %d-byte header; shown as data",
                version, reported, reported == 1 and "" or "s", min_hdr))
        pinfo.cols.info:append(string.format("Truncated IPv%d (%d byte%s)",
            version, payload_len, payload_len == 1 and "" or "s"))
        call_sub(h.data, payload, pinfo, tree)
    elseif version == 4 and h.ip ~= nil then
        call_sub(h.ip, payload, pinfo, tree)
    elseif version == 6 and h.ipv6 ~= nil then
        call_sub(h.ipv6, payload, pinfo, tree)
    else
        subtree:add_proto_expert_info(ef_not_ip,
            string.format("Version nibble %d is not 4 or 6; shown as data", version))
        pinfo.cols.info:append(string.format("Non-IP payload (%d byte%s)",
            payload_len, payload_len == 1 and "" or "s"))
        call_sub(h.data, payload, pinfo, tree)
    end

    return len
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
