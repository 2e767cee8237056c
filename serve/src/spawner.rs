//! Starting worker threads from one thread made with the server, so that every worker gets
//! that thread's scheduling priority rather than that of whichever thread loads a model.
//! Threads inherit their creator's priority, and `aq serve` runs its HTTP threads below the
//! inference workers (`aq_http_server::priority`): a model reloaded from an HTTP thread
//! would otherwise get workers at the HTTP threads' priority.

use std::io;
use std::sync::Mutex;
use std::sync::mpsc;

/// A thread to run.
struct Job {
    name: String,
    body: Box<dyn FnOnce() + Send>,
    started: mpsc::Sender<io::Result<()>>,
}

/// See the module documentation.
pub struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Starts the spawner thread (from the calling thread, whose priority the workers get).
    pub fn new() -> io::Result<Spawner> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("aq-spawner".into())
            .spawn(move || {
                for job in rx {
                    let started = std::thread::Builder::new()
                        .name(job.name)
                        .spawn(job.body)
                        .map(drop);
                    let _ = job.started.send(started);
                }
            })?;
        Ok(Spawner {
            jobs: Mutex::new(jobs),
        })
    }

    /// Starts a thread named `name` running `body`; returns once it has started.
    pub fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let (started, answer) = mpsc::channel();
        let job = Job {
            // Model names come from config files too; std refuses (panics on) a NUL in one.
            name: name.replace('\0', "?"),
            body: Box::new(body),
            started,
        };
        let gone = || io::Error::other("the worker spawner thread is gone");
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_a_nul_starts_a_thread_rather_than_panicking() {
        let (tx, rx) = mpsc::channel();
        Spawner::new()
            .unwrap()
            .spawn("aq-infer-a\0b".into(), move || {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            })
            .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("aq-infer-a?b"));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod priority_tests {
    use super::*;
    use aq_http_server::priority::{lower_this_thread, this_thread_nice};

    #[test]
    fn workers_get_the_spawners_priority_not_their_requesters() {
        let base = this_thread_nice().unwrap();
        let spawner = Spawner::new().unwrap();
        let seen = std::thread::scope(|s| {
            s.spawn(|| {
                lower_this_thread(3);
                let (tx, rx) = mpsc::channel();
                spawner
                    .spawn("probe".into(), move || {
                        let _ = tx.send(this_thread_nice().unwrap());
                    })
                    .unwrap();
                rx.recv().unwrap()
            })
            .join()
            .unwrap()
        });
        assert_eq!(seen, base);
    }
}
