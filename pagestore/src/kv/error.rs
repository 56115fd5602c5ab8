//! Store errors carrying FoundationDB's codes and retry classes.

/// Result of a store operation.
pub type KvResult<T> = Result<T, KvError>;

/// An error from the store, with FDB's numeric code so that both backends
/// report the same thing and callers decide on retries the way FDB's own
/// `on_error` does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store error {code} ({name}): {message}")]
pub struct KvError {
    /// FDB's error code (1020, 1021, 1007, 2101, ...).
    pub code: i32,
    /// FDB's name for the code.
    pub name: &'static str,
    /// Details: what was being done, which key or directory.
    pub message: String,
}

impl KvError {
    /// `transaction_too_old`: the read version left the 5 s MVCC window.
    pub const TRANSACTION_TOO_OLD: i32 = 1007;
    /// `future_version`: asked to read at a version the store has not reached.
    pub const FUTURE_VERSION: i32 = 1009;
    /// `not_committed`: a read-conflict range was written after the read version.
    pub const NOT_COMMITTED: i32 = 1020;
    /// `commit_unknown_result`: the commit may or may not have been applied.
    pub const COMMIT_UNKNOWN_RESULT: i32 = 1021;
    /// `transaction_cancelled`.
    pub const TRANSACTION_CANCELLED: i32 = 1025;
    /// `transaction_timed_out`: the configured timeout elapsed.
    pub const TRANSACTION_TIMED_OUT: i32 = 1031;
    /// `accessed_unreadable`: read of a key written with a versionstamp op.
    pub const ACCESSED_UNREADABLE: i32 = 1036;
    /// `process_behind`: a storage server is behind; retry.
    pub const PROCESS_BEHIND: i32 = 1037;
    /// `tag_throttled`: retry later.
    pub const TAG_THROTTLED: i32 = 1213;
    /// `transaction_too_large`: more than 10,000,000 bytes.
    pub const TRANSACTION_TOO_LARGE: i32 = 2101;
    /// `key_too_large`: a key over 10,000 bytes.
    pub const KEY_TOO_LARGE: i32 = 2102;
    /// `value_too_large`: a value over 100,000 bytes.
    pub const VALUE_TOO_LARGE: i32 = 2103;
    /// `invalid_mutation_type` / bad parameter for an atomic op.
    pub const CLIENT_INVALID_OPERATION: i32 = 2000;
    /// `internal_error`: used by the embedded backend for storage failures.
    pub const INTERNAL_ERROR: i32 = 4100;
    /// `io_error`: the embedded backend's files failed.
    pub const IO_ERROR: i32 = 1510;
    /// `operation_failed`: generic failure, e.g. a store directory in use.
    pub const OPERATION_FAILED: i32 = 1000;

    /// Builds an error with FDB's name for `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        KvError {
            code,
            name: code_name(code),
            message: message.into(),
        }
    }

    /// FDB's `retryable` predicate: running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.is_retryable_not_committed() || self.is_maybe_committed()
    }

    /// FDB's `retryable_not_committed`: retry is safe, nothing was applied.
    pub fn is_retryable_not_committed(&self) -> bool {
        matches!(
            self.code,
            Self::NOT_COMMITTED
                | Self::TRANSACTION_TOO_OLD
                | Self::FUTURE_VERSION
                | Self::PROCESS_BEHIND
                | Self::TAG_THROTTLED
                | 1038 // database_locked
                | 1042 // commit_proxy_memory_limit_exceeded
                | 1051 // batch_transaction_throttled
                | 1078 // grv_proxy_memory_limit_exceeded
                | 1223 // proxy_tag_throttled
                | 1241 // transaction_throttled_hot_shard
        )
    }

    /// FDB's `maybe_committed`: the commit may have been applied; a retry
    /// must find out (idempotency) before doing the work again.
    pub fn is_maybe_committed(&self) -> bool {
        // 1039 cluster_version_changed: the client switched clusters mid-commit.
        matches!(self.code, Self::COMMIT_UNKNOWN_RESULT | 1039)
    }

    /// A read-write conflict (1020).
    pub fn is_conflict(&self) -> bool {
        self.code == Self::NOT_COMMITTED
    }

    /// The read version is outside the MVCC window (1007).
    pub fn is_too_old(&self) -> bool {
        self.code == Self::TRANSACTION_TOO_OLD
    }

    /// One of the size limits (2101, 2102, 2103): never retryable.
    pub fn is_size_limit(&self) -> bool {
        matches!(
            self.code,
            Self::TRANSACTION_TOO_LARGE | Self::KEY_TOO_LARGE | Self::VALUE_TOO_LARGE
        )
    }
}

/// FDB's name for an error code.
pub fn code_name(code: i32) -> &'static str {
    match code {
        1000 => "operation_failed",
        1007 => "transaction_too_old",
        1009 => "future_version",
        1020 => "not_committed",
        1021 => "commit_unknown_result",
        1025 => "transaction_cancelled",
        1031 => "transaction_timed_out",
        1036 => "accessed_unreadable",
        1037 => "process_behind",
        1038 => "database_locked",
        1039 => "cluster_version_changed",
        1213 => "tag_throttled",
        1510 => "io_error",
        2000 => "client_invalid_operation",
        2101 => "transaction_too_large",
        2102 => "key_too_large",
        2103 => "value_too_large",
        4100 => "internal_error",
        _ => "unknown_error",
    }
}

#[cfg(test)]
mod tests {
    use super::KvError;

    #[test]
    fn retry_classes_follow_fdb() {
        assert!(KvError::new(1020, "").is_retryable_not_committed());
        assert!(KvError::new(1007, "").is_retryable());
        assert!(KvError::new(1021, "").is_maybe_committed());
        assert!(!KvError::new(1021, "").is_retryable_not_committed());
        for code in [2101, 2102, 2103] {
            let e = KvError::new(code, "");
            assert!(!e.is_retryable() && e.is_size_limit());
        }
    }
}
