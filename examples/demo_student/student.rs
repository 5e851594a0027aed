//! The demo-student module: its lock resources, declared once, and a
//! controller whose requests use them, as on the VonaJS page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redlock::{meta_redlock, Redlock, Result};
use tokio::time::Instant;

/// The lock resources of module `demo-student`.
#[meta_redlock(module = "demo-student")]
pub enum StudentLock {
    /// Resource `name`.
    Name,
    /// Resource `user-{id}`: one lock per user.
    #[resource("user-{id}")]
    User {
        /// The user's id.
        id: u64,
    },
}

/// The module's scope: what a bean of the module reaches through `this.scope`.
pub struct Scope {
    /// The module's lock resources.
    pub redlock: MetaRedlock,
}

/// What happened, when: the demo prints it, the tests check it.
#[derive(Clone, Debug)]
pub struct Event {
    /// Time since the journal started.
    pub at: Duration,
    /// Request number.
    pub request: u32,
    /// The resource locked.
    pub resource: String,
    /// True when entering the critical section, false when leaving it.
    pub enter: bool,
}

/// A controller of the module, as in the seed's `ControllerStudent`.
pub struct ControllerStudent {
    scope: Scope,
    started: Instant,
    journal: Mutex<Vec<Event>>,
    /// Shared state the critical sections update without atomics: the lock protects it.
    visits: Mutex<std::collections::HashMap<u64, u64>>,
    /// How long each critical section takes.
    pub work: Duration,
}

impl ControllerStudent {
    /// A controller over `engine`.
    pub fn new(engine: &Redlock) -> Arc<ControllerStudent> {
        Arc::new(ControllerStudent {
            scope: Scope {
                redlock: MetaRedlock::new(engine),
            },
            started: Instant::now(),
            journal: Mutex::new(Vec::new()),
            visits: Mutex::new(Default::default()),
            work: Duration::from_millis(50),
        })
    }

    /// Counts a visit of user `id` under `lock_user`: read, work, write.
    pub async fn visit(&self, request: u32, id: u64) -> Result<String> {
        self.scope
            .redlock
            .lock_user(id, |ctx| async move {
                self.record(request, &StudentLock::User { id }, true);
                let seen = self.visits.lock().unwrap().get(&id).copied().unwrap_or(0);
                tokio::time::sleep(self.work).await; // the read-modify-write spans an await
                self.visits.lock().unwrap().insert(id, seen + 1);
                self.record(request, &StudentLock::User { id }, false);
                debug_assert!(!ctx.is_lost());
                format!("user {id}: visit #{}", seen + 1)
            })
            .await
    }

    /// Does some work under `lock_name`, as in the seed's example.
    pub async fn rename(&self, request: u32) -> Result<String> {
        self.scope
            .redlock
            .lock_name(|_ctx| async move {
                self.record(request, &StudentLock::Name, true);
                tokio::time::sleep(self.work).await;
                self.record(request, &StudentLock::Name, false);
                "some result".to_owned()
            })
            .await
    }

    /// The demo's six concurrent requests: three visits of user 42, one of
    /// user 7, and two renames; results in request order.
    pub async fn six_requests(&self) -> [Result<String>; 6] {
        let (a, b, c, d, e, f) = tokio::join!(
            self.visit(1, 42),
            self.visit(2, 42),
            self.visit(3, 42),
            self.visit(4, 7),
            self.rename(5),
            self.rename(6),
        );
        [a, b, c, d, e, f]
    }

    /// The events so far, in time order.
    pub fn journal(&self) -> Vec<Event> {
        self.journal.lock().unwrap().clone()
    }

    fn record(&self, request: u32, resource: &StudentLock, enter: bool) {
        self.journal.lock().unwrap().push(Event {
            at: self.started.elapsed(),
            request,
            resource: resource.to_string(),
            enter,
        });
    }
}
