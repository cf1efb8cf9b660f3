//! Round-trip proptest.
