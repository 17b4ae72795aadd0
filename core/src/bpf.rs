//! Classic BPF: the filter programs `tcpdump -ddd` prints, checked once, then run over
//! each packet on the reader's side.

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// The most instructions a program may have (libpcap's and the kernel's `BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;
/// Words of scratch memory (`BPF_MEMWORDS`).
const MEMORY_WORDS: usize = 16;

/// One instruction as BPF encodes it: opcode, jump offsets if true and if false, and the
/// constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instruction {
    /// The opcode: class, size or operation, mode or source.
    pub code: u16,
    /// Instructions skipped when a conditional jump's test holds.
    pub jt: u8,
    /// Instructions skipped when it does not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.code, self.jt, self.jf, self.k)
    }
}

/// A classic BPF program, validated: it always ends, reads no memory out of bounds and
/// never divides by a constant zero.
///
/// An output with [`Options::bpf`](crate::Options::bpf) keeps the packets for which the
/// program returns non-zero. It runs over the IP packet, as `tcpdump -y RAW` sees it, on
/// the reader's side: the datapath never runs it.
///
/// # Examples
///
/// ```
/// use pcapcast_core::Bpf;
///
/// // `tcpdump -y RAW -ddd 'ip'`, joined by commas, as iptables' `--bytecode` takes it.
/// let ip = Bpf::from_bytecode("4,48 0 0 0,84 0 0 240,21 0 1 64,6 0 0 262144,6 0 0 0")
///     .unwrap_err(); // the count says 4, there are 5
/// assert!(ip.to_string().contains("the count says 4 instructions, there are 5"));
/// let ip = Bpf::from_bytecode("5,48 0 0 0,84 0 0 240,21 0 1 64,6 0 0 262144,6 0 0 0")?;
/// assert!(ip.matches(&[0x45; 20]));
/// assert!(!ip.matches(&[0x60; 40]));
/// assert_eq!(ip.to_string(), "5,48 0 0 0,84 0 0 240,21 0 1 64,6 0 0 262144,6 0 0 0");
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Bpf {
    instructions: Arc<[Instruction]>,
    ops: Arc<[Op]>,
}

impl fmt::Debug for Bpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bpf({self})")
    }
}

/// The bytecode form [`Bpf::from_bytecode`] reads: the count, then each instruction.
impl fmt::Display for Bpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.instructions.len())?;
        for instruction in self.instructions.iter() {
            write!(f, ",{instruction}")?;
        }
        Ok(())
    }
}

impl Bpf {
    /// Reads a program in iptables' `--bytecode` form: what `tcpdump -ddd` prints, joined
    /// by commas (newlines are taken as commas too): the number of instructions, then
    /// `code jt jf k` for each, in decimal.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBpf`] naming the instruction: a field that is not a number or out
    /// of range, a count that does not match, or a program [`Bpf::new`] refuses.
    pub fn from_bytecode(text: &str) -> Result<Bpf, Error> {
        let mut parts = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|part| !part.is_empty());
        let count = parts
            .next()
            .ok_or_else(|| invalid(None, "the program is empty"))?;
        let count: usize = count
            .parse()
            .map_err(|_| invalid(None, format!("the count {count:?} is not a number")))?;
        if count > MAX_INSTRUCTIONS {
            return Err(invalid(
                None,
                format!("{count} instructions; a program has at most {MAX_INSTRUCTIONS}"),
            ));
        }
        let mut instructions = Vec::with_capacity(count);
        for (index, part) in parts.enumerate() {
            if index >= MAX_INSTRUCTIONS {
                return Err(invalid(
                    None,
                    format!("more than {MAX_INSTRUCTIONS} instructions"),
                ));
            }
            instructions.push(parse_instruction(index, part)?);
        }
        if instructions.len() != count {
            return Err(invalid(
                None,
                format!(
                    "the count says {count} instructions, there are {}",
                    instructions.len()
                ),
            ));
        }
        Bpf::new(instructions)
    }

    /// Checks a program as libpcap's `bpf_validate` does, and more strictly: every
    /// opcode one the interpreter knows, every jump forward and within the program, a
    /// return as the last instruction, scratch memory indices below 16, no division or
    /// modulus by a constant 0, 1 to 4096 instructions.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBpf`] naming the first instruction that breaks a rule.
    pub fn new(instructions: impl Into<Vec<Instruction>>) -> Result<Bpf, Error> {
        let instructions: Vec<Instruction> = instructions.into();
        if instructions.is_empty() {
            return Err(invalid(None, "the program is empty"));
        }
        if instructions.len() > MAX_INSTRUCTIONS {
            return Err(invalid(
                None,
                format!(
                    "{} instructions; a program has at most {MAX_INSTRUCTIONS}",
                    instructions.len()
                ),
            ));
        }
        let len = instructions.len();
        let ops = instructions
            .iter()
            .enumerate()
            .map(|(index, instruction)| {
                let op = decode(instruction).map_err(|reason| at(index, instruction, reason))?;
                check_jumps(index, len, &op).map_err(|reason| at(index, instruction, reason))?;
                Ok(op)
            })
            .collect::<Result<Vec<Op>, Error>>()?;
        if !matches!(ops[len - 1], Op::RetK(_) | Op::RetA) {
            return Err(at(
                len - 1,
                &instructions[len - 1],
                "the last instruction must be a return".into(),
            ));
        }
        Ok(Bpf {
            instructions: instructions.into(),
            ops: ops.into(),
        })
    }

    /// The instructions, as given.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// Whether the program accepts `packet`, whose length on the wire is its length.
    pub fn matches(&self, packet: &[u8]) -> bool {
        self.run(packet, u32::try_from(packet.len()).unwrap_or(u32::MAX)) != 0
    }

    /// Runs the program over `packet`, of which `wire_len` bytes were on the wire (what
    /// `len` loads); returns what it returns: 0 rejects the packet. A load past the end
    /// of `packet`, or a division by an `X` of 0, ends the run with 0, as in libpcap.
    pub fn run(&self, packet: &[u8], wire_len: u32) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut memory = [0u32; MEMORY_WORDS];
        let mut pc = 0;
        // Validation proved that every jump lands inside and that the last op returns.
        while let Some(op) = self.ops.get(pc) {
            pc += 1;
            match *op {
                Op::LdAbs(size, k) => match load(packet, size, Some(k)) {
                    Some(value) => a = value,
                    None => return 0,
                },
                Op::LdInd(size, k) => match load(packet, size, x.checked_add(k)) {
                    Some(value) => a = value,
                    None => return 0,
                },
                Op::LdLen => a = wire_len,
                Op::LdImm(k) => a = k,
                Op::LdMem(i) => a = memory[i],
                Op::LdxImm(k) => x = k,
                Op::LdxMem(i) => x = memory[i],
                Op::LdxLen => x = wire_len,
                Op::LdxMsh(k) => match packet.get(k as usize) {
                    Some(byte) => x = u32::from(byte & 0x0f) << 2,
                    None => return 0,
                },
                Op::St(i) => memory[i] = a,
                Op::Stx(i) => memory[i] = x,
                Op::Alu(op, src) => {
                    let operand = match src {
                        Src::K(k) => k,
                        Src::X => x,
                    };
                    a = match alu(op, a, operand) {
                        Some(value) => value,
                        None => return 0,
                    };
                }
                Op::Neg => a = a.wrapping_neg(),
                Op::Ja(k) => pc += k as usize,
                Op::Jump(cond, src, jt, jf) => {
                    let operand = match src {
                        Src::K(k) => k,
                        Src::X => x,
                    };
                    let holds = match cond {
                        Cond::Eq => a == operand,
                        Cond::Gt => a > operand,
                        Cond::Ge => a >= operand,
                        Cond::Set => a & operand != 0,
                    };
                    pc += usize::from(if holds { jt } else { jf });
                }
                Op::RetK(k) => return k,
                Op::RetA => return a,
                Op::Tax => x = a,
                Op::Txa => a = x,
            }
        }
        0
    }
}

/// An instruction, decoded once when the program is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    LdAbs(Size, u32),
    LdInd(Size, u32),
    LdLen,
    LdImm(u32),
    LdMem(usize),
    LdxImm(u32),
    LdxMem(usize),
    LdxLen,
    LdxMsh(u32),
    St(usize),
    Stx(usize),
    Alu(AluOp, Src),
    Neg,
    Ja(u32),
    Jump(Cond, Src, u8, u8),
    RetK(u32),
    RetA,
    Tax,
    Txa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Word,
    Half,
    Byte,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    K(u32),
    X,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
}

// The fields of an opcode (`bpf.h`).
const CLASS: u16 = 0x07;
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const SIZE_MODE: u16 = 0xf8;
const OP: u16 = 0xf0;
const SRC_X: u16 = 0x08;

fn decode(instruction: &Instruction) -> Result<Op, String> {
    let Instruction { code, k, jt, jf } = *instruction;
    let memory = |k: u32| -> Result<usize, String> {
        if (k as usize) < MEMORY_WORDS {
            Ok(k as usize)
        } else {
            Err(format!(
                "scratch memory index {k}; there are {MEMORY_WORDS} words"
            ))
        }
    };
    let unknown = || Err(format!("unknown opcode {code:#06x}"));
    if code > 0xff {
        return unknown();
    }
    let src = if code & SRC_X != 0 { Src::X } else { Src::K(k) };
    Ok(match code & CLASS {
        // size | mode: W 0x00, H 0x08, B 0x10; IMM 0x00, ABS 0x20, IND 0x40, MEM 0x60,
        // LEN 0x80, MSH 0xa0.
        LD => match code & SIZE_MODE {
            0x00 => Op::LdImm(k),
            0x20 => Op::LdAbs(Size::Word, k),
            0x28 => Op::LdAbs(Size::Half, k),
            0x30 => Op::LdAbs(Size::Byte, k),
            0x40 => Op::LdInd(Size::Word, k),
            0x48 => Op::LdInd(Size::Half, k),
            0x50 => Op::LdInd(Size::Byte, k),
            0x60 => Op::LdMem(memory(k)?),
            0x80 => Op::LdLen,
            _ => return unknown(),
        },
        LDX => match code & SIZE_MODE {
            0x00 => Op::LdxImm(k),
            0x60 => Op::LdxMem(memory(k)?),
            0x80 => Op::LdxLen,
            0xb0 => Op::LdxMsh(k),
            _ => return unknown(),
        },
        ST if code == ST => Op::St(memory(k)?),
        STX if code == STX => Op::Stx(memory(k)?),
        ALU => {
            let op = match code & OP {
                0x00 => AluOp::Add,
                0x10 => AluOp::Sub,
                0x20 => AluOp::Mul,
                0x30 => AluOp::Div,
                0x40 => AluOp::Or,
                0x50 => AluOp::And,
                0x60 => AluOp::Lsh,
                0x70 => AluOp::Rsh,
                0x80 if code == 0x84 => return Ok(Op::Neg),
                0x90 => AluOp::Mod,
                0xa0 => AluOp::Xor,
                _ => return unknown(),
            };
            if matches!(op, AluOp::Div | AluOp::Mod) && src == Src::K(0) {
                return Err("division by a constant 0".into());
            }
            Op::Alu(op, src)
        }
        JMP => {
            let cond = match code & OP {
                0x00 if code == JMP => return Ok(Op::Ja(k)),
                0x10 => Cond::Eq,
                0x20 => Cond::Gt,
                0x30 => Cond::Ge,
                0x40 => Cond::Set,
                _ => return unknown(),
            };
            Op::Jump(cond, src, jt, jf)
        }
        // rval: K 0x00, A 0x10 (libpcap returns neither X nor anything else).
        RET => match code {
            0x06 => Op::RetK(k),
            0x16 => Op::RetA,
            _ => return unknown(),
        },
        MISC => match code {
            0x07 => Op::Tax,
            0x87 => Op::Txa,
            _ => return unknown(),
        },
        _ => return unknown(),
    })
}

fn check_jumps(index: usize, len: usize, op: &Op) -> Result<(), String> {
    let next = index + 1;
    let lands = |offset: u64| next as u64 + offset < len as u64;
    match *op {
        // libpcap sign-extends `ja`'s k: its `protochain` code loops back that way.
        Op::Ja(k) if (k as i32) < 0 => Err(format!(
            "a backward jump ({}); jumps must go forward (libpcap's `protochain` loops back)",
            k as i32
        )),
        Op::Ja(k) if !lands(u64::from(k)) => Err(format!("a jump of {k} past the end")),
        Op::Jump(_, _, jt, jf) if !lands(u64::from(jt)) || !lands(u64::from(jf)) => {
            Err(format!("a jump ({jt} or {jf}) past the end"))
        }
        _ => Ok(()),
    }
}

fn load(packet: &[u8], size: Size, offset: Option<u32>) -> Option<u32> {
    let at = offset? as usize;
    Some(match size {
        Size::Word => u32::from_be_bytes(packet.get(at..at.checked_add(4)?)?.try_into().ok()?),
        Size::Half => u32::from(u16::from_be_bytes(
            packet.get(at..at.checked_add(2)?)?.try_into().ok()?,
        )),
        Size::Byte => u32::from(*packet.get(at)?),
    })
}

fn alu(op: AluOp, a: u32, operand: u32) -> Option<u32> {
    Some(match op {
        AluOp::Add => a.wrapping_add(operand),
        AluOp::Sub => a.wrapping_sub(operand),
        AluOp::Mul => a.wrapping_mul(operand),
        AluOp::Div => a.checked_div(operand)?,
        AluOp::Mod => a.checked_rem(operand)?,
        AluOp::Or => a | operand,
        AluOp::And => a & operand,
        AluOp::Xor => a ^ operand,
        // libpcap: a shift by 32 or more gives 0.
        AluOp::Lsh => a.checked_shl(operand).unwrap_or(0),
        AluOp::Rsh => a.checked_shr(operand).unwrap_or(0),
    })
}

fn parse_instruction(index: usize, text: &str) -> Result<Instruction, Error> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [code, jt, jf, k] = fields[..] else {
        return Err(invalid(
            Some(index),
            format!("{text:?} is not four numbers `code jt jf k`"),
        ));
    };
    let number = |name: &str, value: &str, max: u64| -> Result<u64, Error> {
        match value.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(invalid(
                Some(index),
                format!("{name} {value:?} is not a number from 0 to {max}"),
            )),
        }
    };
    Ok(Instruction {
        code: number("code", code, u64::from(u16::MAX))? as u16,
        jt: number("jt", jt, u64::from(u8::MAX))? as u8,
        jf: number("jf", jf, u64::from(u8::MAX))? as u8,
        k: number("k", k, u64::from(u32::MAX))? as u32,
    })
}

fn invalid(instruction: Option<usize>, reason: impl Into<String>) -> Error {
    Error::InvalidBpf {
        instruction,
        reason: reason.into(),
    }
}

fn at(index: usize, instruction: &Instruction, reason: String) -> Error {
    invalid(Some(index), format!("{reason} (`{instruction}`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(text: &str) -> Bpf {
        Bpf::from_bytecode(text).unwrap()
    }

    /// `tcpdump -ddd 'udp port 53'` over a raw-IP file (tcpdump 4.99.3, libpcap 1.10.3).
    const UDP_53: &str = "23,48 0 0 0,84 0 0 240,21 0 6 96,48 0 0 6,21 0 17 17,40 0 0 40,21 14 0 53,40 0 0 42,21 12 13 53,48 0 0 0,84 0 0 240,21 0 10 64,48 0 0 9,21 0 8 17,40 0 0 6,69 6 0 8191,177 0 0 0,72 0 0 0,21 2 0 53,72 0 0 2,21 0 1 53,6 0 0 65535,6 0 0 0";

    #[test]
    fn a_compiled_filter_runs() {
        let bpf = program(UDP_53);
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[9] = 17;
        v4[20..22].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(bpf.run(&v4, 28), 65_535);
        v4[9] = 6;
        assert_eq!(bpf.run(&v4, 28), 0);
        assert!(!bpf.matches(&v4[..10]), "a cut packet is rejected");
        assert_eq!(bpf.to_string(), UDP_53);
    }

    #[test]
    fn bad_programs_name_their_instruction() {
        for (text, says) in [
            ("", "empty"),
            ("x", "not a number"),
            ("2,6 0 0 0", "there are 1"),
            ("1,6 0 0", "at instruction 0: \"6 0 0\" is not four numbers"),
            ("1,6 0 0 4294967296", "instruction 0"),
            (
                "2,21 1 0 0,6 0 0 0",
                "at instruction 0: a jump (1 or 0) past the end (`21 1 0 0`)",
            ),
            ("2,5 0 0 1,6 0 0 0", "a jump of 1 past the end"),
            (
                "2,5 0 0 4294967295,6 0 0 0",
                "at instruction 0: a backward jump (-1)",
            ),
            ("1,0 0 0 0", "last instruction must be a return"),
            ("2,96 0 0 16,6 0 0 0", "scratch memory index 16"),
            ("2,52 0 0 0,6 0 0 0", "division by a constant 0"),
            ("2,148 0 0 0,6 0 0 0", "division by a constant 0"),
            ("1,14 0 0 0", "unknown opcode"),
            ("2,24 0 0 0,6 0 0 0", "unknown opcode"),
            ("0", "empty"),
            ("4097", "at most 4096"),
        ] {
            let error = Bpf::from_bytecode(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn loads_past_the_end_and_division_by_x_zero_reject() {
        // ldx #0; ld #1; div x; ret a
        let div = program("4,1 0 0 0,0 0 0 1,60 0 0 0,22 0 0 0");
        assert_eq!(div.run(&[], 0), 0);
        // ldx #2; ld [x + 4294967295]; ret #1: the offset overflows
        let ind = program("3,1 0 0 2,64 0 0 4294967295,6 0 0 1");
        assert_eq!(ind.run(&[0; 64], 64), 0);
        // ldxb 4*([100]&0xf); ret #1
        let msh = program("2,177 0 0 100,6 0 0 1");
        assert_eq!(msh.run(&[0; 100], 100), 0);
        assert_eq!(msh.run(&[0; 101], 101), 1);
    }

    #[test]
    fn scratch_memory_alu_and_len() {
        // ld len; st M[15]; ldx M[15]; ld #3; lsh x; neg; ret a
        let bpf = program("7,128 0 0 0,2 0 0 15,97 0 0 15,0 0 0 3,108 0 0 0,132 0 0 0,22 0 0 0");
        assert_eq!(bpf.run(&[], 2), 3u32.wrapping_shl(2).wrapping_neg());
        assert_eq!(bpf.run(&[], 40), 0, "a shift by 32 or more gives 0");
    }
}
