//! Capture filters: tcpdump expressions compiled by libpcap into the classic BPF the
//! daemon runs on its readers' side.

use pcapcast_core::Bpf;

/// Compiles a tcpdump expression for raw IP, optimized as tcpdump does.
///
/// # Errors
///
/// libpcap's message, on one line.
pub fn compile(expression: &str) -> Result<Bpf, String> {
    // libpcap wants the platform's DLT_RAW (12 on Linux, 14 on OpenBSD), not the file
    // format's LINKTYPE_RAW (101): the filter sees the IP packet, as `tcpdump -y RAW`.
    let dead = pcap::Linktype::from_name("RAW")
        .and_then(pcap::Capture::dead)
        .map_err(|e| format!("libpcap cannot compile filters here: {e}"))?;
    let program = dead
        .compile(expression, true)
        .map_err(|e| format!("bad filter {expression:?}: {}", one_line(&e.to_string())))?;
    let instructions = program.get_instructions();
    let mut bytecode = instructions.len().to_string();
    for instruction in instructions {
        bytecode.push(',');
        bytecode.push_str(&instruction.to_string());
    }
    // libpcap's own output: a refusal here means our validator and libpcap disagree.
    Bpf::from_bytecode(&bytecode).map_err(|e| {
        format!("filter {expression:?} compiled to a program pcapcast cannot run: {e}")
    })
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_compile_for_raw_ip() {
        let dns = compile("udp port 53").unwrap();
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[9] = 17;
        packet[22..24].copy_from_slice(&53u16.to_be_bytes());
        assert!(dns.matches(&packet));
        packet[9] = 6;
        assert!(!dns.matches(&packet));
    }

    #[test]
    fn a_bad_expression_is_one_line_from_libpcap() {
        let error = compile("udp port fifty-three").unwrap_err();
        assert!(
            error.starts_with("bad filter \"udp port fifty-three\": "),
            "{error}"
        );
        assert!(!error.contains('\n'));
        assert!(
            compile("ether host 1:2:3:4:5:6").is_err(),
            "no link layer in raw IP"
        );
    }
}
