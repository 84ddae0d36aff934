//! `prism status` and `prism reload`: one AdminService call to a running server.

use tonic::transport::Channel;

use super::{runtime, CommandError, CommandResult};
use crate::api::admin_service_client::AdminServiceClient;
use crate::api::{GetReloadStatusRequest, ReloadRequest};
use crate::cli;

async fn connect(server: &str) -> Result<AdminServiceClient<Channel>, CommandError> {
    AdminServiceClient::connect(server.to_owned()).await.map_err(|error| {
        CommandError::Failed(format!("cannot reach {server}: {error} (is `prism serve` running there?)"))
    })
}

pub fn status(server: &str) -> CommandResult {
    runtime(tokio::runtime::Builder::new_current_thread())?.block_on(async {
        let reply = connect(server)
            .await?
            .get_reload_status(GetReloadStatusRequest {})
            .await
            .map_err(|status| CommandError::Failed(status.message().to_owned()))?;
        print!("{}", cli::render_status(&reply.into_inner()));
        Ok(())
    })
}

/// Exit 1 when the server refused the reload (the outcome says why).
pub fn reload(server: &str) -> CommandResult {
    runtime(tokio::runtime::Builder::new_current_thread())?.block_on(async {
        let reply = connect(server)
            .await?
            .reload(ReloadRequest {})
            .await
            .map_err(|status| CommandError::Failed(status.message().to_owned()))?;
        let outcome = reply.into_inner().outcome.unwrap_or_default();
        print!("{}", cli::render_reload(&outcome));
        if outcome.ok {
            Ok(())
        } else {
            Err(CommandError::Reported(1))
        }
    })
}
