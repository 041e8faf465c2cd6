//! The `page` and `size` query parameters of the lists (tasks, the HITL
//! inbox): zero-based pages of 20 by default, at most 100.

use std::collections::HashMap;

use crate::error::AppError;

/// Default and largest page size.
pub const PAGE_SIZE: (u64, u64) = (20, 100);

/// A page asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Zero-based.
    pub page: u64,
    /// Rows per page, 1 to 100.
    pub size: u64,
}

impl Paging {
    /// Reads `page` and `size` from `query` (400 when not whole numbers, or
    /// `size` 0; a larger `size` is cut to 100).
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, AppError> {
        let number = |name: &str, default: u64| match query.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .map_err(|_| AppError::BadRequest(format!("{name} must be a whole number ≥ 0"))),
        };
        let page = number("page", 0)?;
        let size = number("size", PAGE_SIZE.0)?.min(PAGE_SIZE.1);
        if size == 0 {
            return Err(AppError::BadRequest("size must be at least 1".into()));
        }
        Ok(Self { page, size })
    }

    /// The rows to skip, when PostgreSQL's bigint `OFFSET` can say it
    /// (`None`: past the end).
    pub fn offset(self) -> Option<i64> {
        self.page
            .checked_mul(self.size)
            .and_then(|o| i64::try_from(o).ok())
    }
}
