//! Sequence numbers: 1..=0x7FFF_FFFF, wrapping back to 1 (SMPP 3.4 section 5.1.4).

/// Largest sequence number the spec allows.
pub const MAX_SEQUENCE: u32 = 0x7FFF_FFFF;

/// Hands out outbound sequence numbers for one session.
#[derive(Clone, Debug)]
pub struct SequenceGen {
    next: u32,
}

impl Default for SequenceGen {
    fn default() -> Self {
        SequenceGen { next: 1 }
    }
}

impl SequenceGen {
    /// Start at `first` (clamped into the valid range).
    pub fn starting_at(first: u32) -> Self {
        SequenceGen { next: if (1..=MAX_SEQUENCE).contains(&first) { first } else { 1 } }
    }

    /// The next number; after 0x7FFF_FFFF comes 1 again.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u32 {
        let n = self.next;
        self.next = if n >= MAX_SEQUENCE { 1 } else { n + 1 };
        n
    }

    /// What `next` will return, without taking it.
    pub fn peek(&self) -> u32 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_wraps_to_one() {
        let mut s = SequenceGen::default();
        assert_eq!(s.next(), 1);
        assert_eq!(s.next(), 2);
        let mut s = SequenceGen::starting_at(MAX_SEQUENCE - 1);
        assert_eq!(s.next(), MAX_SEQUENCE - 1);
        assert_eq!(s.next(), MAX_SEQUENCE);
        assert_eq!(s.next(), 1);
        assert_eq!(s.peek(), 2);
    }

    #[test]
    fn out_of_range_start_is_clamped() {
        assert_eq!(SequenceGen::starting_at(0).next(), 1);
        assert_eq!(SequenceGen::starting_at(0x8000_0000).next(), 1);
        assert_eq!(SequenceGen::starting_at(u32::MAX).next(), 1);
    }
}
