//! The password-check slots and the bounded queue in front of them: each
//! argon2id check takes 19 MiB, so at most `LOGIN_HASH_MEMORY_MIB / 19`
//! run at once; a login finding none free waits, at most
//! `LOGIN_QUEUE_MAX` of them for at most `LOGIN_QUEUE_WAIT_SECS`, and past
//! either bound is 503 with `Retry-After`. Memory stays bounded: a waiting
//! login holds only its request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::config::LoginLimits;
use crate::error::AppError;

/// The password-check slots and the bounded queue in front of them.
#[derive(Debug)]
pub struct Slots {
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    queue_max: usize,
    wait: std::time::Duration,
}

impl Slots {
    /// The slots and queue `limits` describe.
    pub fn new(limits: &LoginLimits) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(limits.hash_slots)),
            waiting: AtomicUsize::new(0),
            queue_max: limits.queue_max,
            wait: limits.queue_wait,
        }
    }

    /// A slot: at once when one is free, else after waiting in the queue;
    /// 503 when the queue is full or the wait is over.
    pub async fn take(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let busy = || AppError::Busy("Too many logins at once: retry in a second");
        if self.waiting.fetch_add(1, Relaxed) >= self.queue_max {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(busy());
        }
        let slot = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Relaxed);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(busy()),
        }
    }
}
