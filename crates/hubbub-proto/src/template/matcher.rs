//! Running the NFA Pike-VM style: one pass over the topic, all threads in step.

use super::compile::Inst;

/// Marks a program counter with no live thread.
const IDLE: u32 = u32::MAX;

/// The live threads at one input position: per program counter, the smallest prefix count.
///
/// Keeping only the smallest count is exact: a thread that has used fewer characters of a
/// `:N` budget can do everything one that has used more can, so counters never multiply states.
#[derive(Debug)]
struct Threads {
    counts: Vec<u32>,
    live: Vec<usize>,
    stack: Vec<(usize, u32)>,
}

impl Threads {
    pub(super) fn new(len: usize) -> Self {
        Self {
            counts: vec![IDLE; len],
            live: Vec::new(),
            stack: Vec::new(),
        }
    }

    fn clear(&mut self) {
        for &pc in &self.live {
            self.counts[pc] = IDLE;
        }
        self.live.clear();
    }

    pub(super) fn contains(&self, pc: usize) -> bool {
        self.counts[pc] != IDLE
    }

    /// Adds a thread and everything reachable from it without consuming input.
    fn add(&mut self, prog: &[Inst], pc: usize, count: u32) {
        self.stack.push((pc, count));
        while let Some((pc, count)) = self.stack.pop() {
            if self.counts[pc] <= count {
                continue;
            }
            if self.counts[pc] == IDLE {
                self.live.push(pc);
            }
            self.counts[pc] = count;
            match prog[pc] {
                Inst::Split(a, b) => self.stack.extend([(b, count), (a, count)]),
                Inst::Jump(a) => self.stack.push((a, count)),
                Inst::ResetCount => self.stack.push((pc + 1, 0)),
                Inst::Count(max) if count < u32::from(max) => self.stack.push((pc + 1, count + 1)),
                _ => {}
            }
        }
    }
}

/// Runs the NFA over the whole input; true if some thread reaches `Match` exactly at the end.
pub(super) fn run(prog: &[Inst], input: &[u8]) -> bool {
    let mut current = Threads::new(prog.len());
    let mut next = Threads::new(prog.len());
    current.add(prog, 0, 0);
    for &byte in input {
        if current.live.is_empty() {
            return false;
        }
        next.clear();
        for &pc in &current.live {
            if consumes(prog[pc], byte) {
                next.add(prog, pc + 1, current.counts[pc]);
            }
        }
        std::mem::swap(&mut current, &mut next);
    }
    prog.len()
        .checked_sub(1)
        .is_some_and(|end| current.contains(end))
}

fn consumes(inst: Inst, byte: u8) -> bool {
    match inst {
        Inst::Byte(b) => b == byte,
        Inst::Class(class) => class.allows(byte),
        Inst::Hex => byte.is_ascii_hexdigit(),
        _ => false,
    }
}
