//! Compilation of parsed pieces into a small Thompson NFA (see the module docs).

use super::parse::{Class, Expression, Operator, Piece, VarSpec};

/// One NFA instruction. Consuming instructions continue at the next instruction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Inst {
    /// Consume exactly this byte.
    Byte(u8),
    /// Consume one byte the class allows.
    Class(Class),
    /// Consume one ASCII hex digit (the tail of a `%XX` triplet).
    Hex,
    /// Continue at both targets.
    Split(usize, usize),
    Jump(usize),
    /// Start counting the characters of a prefix-limited value.
    ResetCount,
    /// Count one more character; the thread dies if that exceeds the limit.
    Count(u16),
    /// Dead end.
    Fail,
    /// Accept if the input is exhausted.
    Match,
}

/// Placeholder for a forward branch target, patched once the target is emitted.
const HOLE: usize = usize::MAX;

pub(super) fn compile(pieces: &[Piece<'_>]) -> Vec<Inst> {
    let mut b = Builder::default();
    for piece in pieces {
        match piece {
            Piece::Literal(s) => b.literal(s.as_bytes()),
            Piece::Expression(e) => b.expression(e),
        }
    }
    b.push(Inst::Match);
    b.prog
}

#[derive(Debug, Default)]
struct Builder {
    prog: Vec<Inst>,
}

impl Builder {
    pub(super) fn pc(&self) -> usize {
        self.prog.len()
    }

    pub(super) fn push(&mut self, inst: Inst) -> usize {
        self.prog.push(inst);
        self.prog.len() - 1
    }

    /// `Split(next, HOLE)`: take the following code, or skip to a target patched later.
    fn split_forward(&mut self) -> usize {
        let next = self.pc() + 1;
        self.push(Inst::Split(next, HOLE))
    }

    /// Resolves the pending branch of the instruction at `at`.
    fn patch(&mut self, at: usize, target: usize) {
        if let Inst::Split(_, t) | Inst::Jump(t) = &mut self.prog[at] {
            *t = target;
        }
    }

    fn patch_all(&mut self, holes: &mut Vec<usize>, target: usize) {
        for at in holes.drain(..) {
            self.patch(at, target);
        }
    }

    pub(super) fn literal(&mut self, s: &[u8]) {
        for &b in s {
            self.push(Inst::Byte(b));
        }
    }

    /// One character: a byte of the class, or a `%XX` triplet.
    pub(super) fn character(&mut self, class: Class) {
        let split = self.split_forward();
        self.push(Inst::Class(class));
        let done = self.push(Inst::Jump(HOLE));
        self.patch(split, self.pc());
        self.literal(b"%");
        self.push(Inst::Hex);
        self.push(Inst::Hex);
        self.patch(done, self.pc());
    }

    /// A value: `min_one`.. or zero.. characters, at most `max` if given.
    pub(super) fn value(&mut self, class: Class, min_one: bool, max: Option<u16>) {
        if max.is_some() {
            self.push(Inst::ResetCount);
        }
        if min_one {
            self.counted_character(class, max);
        }
        let more = self.split_forward();
        self.counted_character(class, max);
        self.push(Inst::Jump(more));
        self.patch(more, self.pc());
    }

    fn counted_character(&mut self, class: Class, max: Option<u16>) {
        if let Some(max) = max {
            self.push(Inst::Count(max));
        }
        self.character(class);
    }

    fn optional(&mut self, body: impl FnOnce(&mut Self)) {
        let skip = self.split_forward();
        body(self);
        self.patch(skip, self.pc());
    }

    /// `item (sep item)*`, the shape of an exploded variable.
    fn separated(&mut self, sep: u8, item: impl FnOnce(&mut Self)) {
        let start = self.pc();
        item(self);
        let more = self.split_forward();
        self.literal(&[sep]);
        self.push(Inst::Jump(start));
        self.patch(more, self.pc());
    }

    /// Empty, or `first` then a non-empty in-order subset of the variables joined by `sep`.
    ///
    /// Per variable `j` the code is: `N_j` (nothing matched yet: take `V_j` or go to `N_j+1`),
    /// `Y_j` (something matched: take `sep V_j` or go to `Y_j+1`), then `V_j`, which continues
    /// at `Y_j+1`. After the last variable `N` fails and `Y` exits, so each variable is compiled
    /// once and the code stays linear in the number of variables.
    pub(super) fn expression(&mut self, e: &Expression) {
        let skip = self.split_forward();
        self.literal(e.op.first());
        let (mut none_holes, mut some_holes) = (Vec::new(), Vec::new());
        for (j, var) in e.vars.iter().enumerate() {
            let pc = self.pc();
            self.patch_all(&mut none_holes, pc);
            let none = self.push(Inst::Split(HOLE, HOLE));
            if j > 0 {
                let pc = self.pc();
                self.patch_all(&mut some_holes, pc);
                some_holes.push(self.split_forward());
                self.literal(&[e.op.sep()]);
            }
            self.prog[none] = Inst::Split(self.pc(), HOLE);
            none_holes.push(none);
            self.variable(e.op, var);
            some_holes.push(self.push(Inst::Jump(HOLE)));
        }
        let dead = self.push(Inst::Fail);
        self.patch_all(&mut none_holes, dead);
        let exit = self.pc();
        self.patch_all(&mut some_holes, exit);
        self.patch(skip, exit);
    }

    /// What one defined variable expands to under `op`.
    pub(super) fn variable(&mut self, op: Operator, var: &VarSpec) {
        let class = op.class();
        match (op.named(), var.explode) {
            (false, false) => self.value(class, false, var.prefix),
            (false, true) => self.separated(op.sep(), |b| {
                b.value(class, false, None);
                b.optional(|b| {
                    b.literal(b"=");
                    b.value(class, false, None);
                });
            }),
            (true, false) => {
                self.literal(var.name.as_bytes());
                self.named_value(op, var.prefix);
            }
            (true, true) => self.separated(op.sep(), |b| {
                b.value(class, true, None);
                b.named_value(op, None);
            }),
        }
    }

    /// The part after the name: `=value`, or for `;` either `=value` or nothing.
    fn named_value(&mut self, op: Operator, max: Option<u16>) {
        let class = op.class();
        if op.keeps_equals_when_empty() {
            self.literal(b"=");
            self.value(class, false, max);
        } else {
            self.optional(|b| {
                b.literal(b"=");
                b.value(class, true, max);
            });
        }
    }
}
