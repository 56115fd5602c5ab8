//! The FoundationDB backend (feature `fdb`). SKELETON until its issue.
