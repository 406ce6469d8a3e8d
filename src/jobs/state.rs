//! The one job lifecycle state, [`JobState`]: what the store keeps (as its number), what the
//! manager moves jobs through and what the gRPC layer and the CLI client show. Its numbers are
//! the proto's `JobState` values.

/// A job's lifecycle state (numbers as in the proto's `JobState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued = 1,
    Running = 2,
    Cancelling = 3,
    Completed = 4,
    Failed = 5,
    Cancelled = 6,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Cancelling,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The states of a job that holds a lease (a replica is running it).
    pub const LEASED: [JobState; 2] = [JobState::Running, JobState::Cancelling];

    pub fn from_i32(v: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i32 == v)
    }

    /// `queued`, `running`, … as [`JobState::as_str`] writes them (any case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}
