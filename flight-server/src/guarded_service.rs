//! The Flight service as clients reach it: every call but the handshake
//! needs credentials when users are configured, `ListActions` included
//! (arrow-flight's Flight SQL dispatch answers some calls without asking
//! the service, so the check sits in front of all of it). The caller's
//! name goes with the request to the Flight SQL service, which keys
//! per-user state by it.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Caller};
use crate::service::StrataFlightSql;

/// The Flight SQL service behind authentication.
pub(crate) struct GuardedService {
    inner: Arc<StrataFlightSql>,
    auth: Arc<Authenticator>,
}

impl GuardedService {
    pub(crate) fn new(inner: Arc<StrataFlightSql>, auth: Arc<Authenticator>) -> Self {
        GuardedService { inner, auth }
    }

    fn admit<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let caller = self.auth.check(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Who made `request` (set by [`GuardedService`]).
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("no credentials: authenticate with the handshake first")
        })
}

type Inner = StrataFlightSql;

#[tonic::async_trait]
impl FlightService for GuardedService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(self.inner.as_ref(), request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.admit(request)?;
        Err(Status::unimplemented(
            "ListFlights is not supported; list tables with GetTables (Flight SQL)",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        FlightService::get_schema(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(self.inner.as_ref(), self.admit(request)?).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(self.inner.as_ref(), self.admit(request)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_what_the_guard_set() {
        let mut request = Request::new(());
        assert_eq!(
            caller(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        request.extensions_mut().insert(Caller("bi".into()));
        assert_eq!(caller(&request).unwrap(), Caller("bi".into()));
    }
}
