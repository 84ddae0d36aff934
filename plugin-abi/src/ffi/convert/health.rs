use crate::ffi::{FfiHealth, FfiHealthStatus};
use crate::{Health, HealthStatus};

impl From<HealthStatus> for FfiHealthStatus {
    fn from(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Serving => FfiHealthStatus::Serving,
            HealthStatus::Degraded => FfiHealthStatus::Degraded,
            HealthStatus::Unhealthy => FfiHealthStatus::Unhealthy,
        }
    }
}

impl From<FfiHealthStatus> for HealthStatus {
    fn from(status: FfiHealthStatus) -> Self {
        match status {
            FfiHealthStatus::Serving => HealthStatus::Serving,
            FfiHealthStatus::Degraded => HealthStatus::Degraded,
            FfiHealthStatus::Unhealthy => HealthStatus::Unhealthy,
        }
    }
}

impl From<Health> for FfiHealth {
    fn from(health: Health) -> Self {
        FfiHealth { status: health.status.into(), message: health.message.into() }
    }
}

impl From<FfiHealth> for Health {
    fn from(health: FfiHealth) -> Self {
        Health { status: health.status.into(), message: health.message.into_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_round_trips() {
        for health in [Health::serving(), Health::degraded("slow"), Health::unhealthy("down")] {
            assert_eq!(Health::from(FfiHealth::from(health.clone())), health);
        }
    }
}
