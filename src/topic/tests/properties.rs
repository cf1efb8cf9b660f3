//! Property tests: the trees against the naive `matches` and a map model.
