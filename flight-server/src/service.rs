//! The Flight SQL service: the protocol's calls mapped onto the warehouse
//! catalog and the query runner, behind authentication.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Authenticator;
use crate::catalog::{CATALOG, SCHEMAS};
use crate::guarded_service::caller;
use crate::param_ipc::IpcPart;
use crate::query_runner::QueryRunner;
use crate::result_stream::DoGetStream;
use crate::server_info::{SQL_INFO, XDBC_TYPES};

/// The monitoring actions.
const ACTIVE_QUERIES: &str = "strata.active_queries";
const QUERY_STATUS: &str = "strata.query_status";

/// Most messages a parameter bind may send (a schema, a batch, and the
/// descriptor-only first message some clients send).
const BIND_MESSAGES: usize = 8;

/// The Flight SQL service over a warehouse (reached through
/// `GuardedService`, which checks credentials).
pub(crate) struct StrataFlightSql {
    runner: QueryRunner,
    auth: Arc<Authenticator>,
}

impl StrataFlightSql {
    /// A service running queries with `runner`, authenticating with `auth`.
    pub(crate) fn new(runner: QueryRunner, auth: Arc<Authenticator>) -> Self {
        StrataFlightSql { runner, auth }
    }
}

fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
            ticket: ticket.into(),
        }))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn batch_stream<E: Into<FlightError> + Send + 'static>(
    batch: Result<RecordBatch, E>,
) -> Response<DoGetStream> {
    let stream = futures::stream::once(async move { batch.map_err(Into::into) });
    Response::new(Box::pin(
        FlightDataEncoderBuilder::new()
            .build(stream)
            .map_err(Status::from),
    ))
}

fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

fn unavailable_info() -> Status {
    Status::internal("server metadata could not be built")
}

/// Reads a bind's messages, refusing more than `limit` bytes in all before
/// anything is decoded.
async fn read_bind(stream: PeekableFlightDataStream, limit: usize) -> Result<Vec<IpcPart>, Status> {
    let mut stream = stream;
    let mut parts = Vec::new();
    let mut total = 0usize;
    while let Some(data) = stream.next().await {
        let data = data?;
        total = total
            .saturating_add(data.data_header.len())
            .saturating_add(data.data_body.len())
            .saturating_add(data.app_metadata.len());
        if total > limit {
            return Err(Status::invalid_argument(format!(
                "the bound parameters are over {limit} bytes (serve.limits.parameter_bytes)"
            )));
        }
        if parts.len() == BIND_MESSAGES {
            return Err(Status::invalid_argument(
                "too many messages in a parameter bind: send a schema and one batch of one row",
            ));
        }
        parts.push(IpcPart {
            header: data.data_header,
            body: data.data_body,
        });
    }
    Ok(parts)
}

/// An action's one result.
fn action_result(
    body: impl Into<prost::bytes::Bytes>,
) -> Response<<StrataFlightSql as FlightService>::DoActionStream> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(futures::stream::iter([Ok(result)])))
}

#[tonic::async_trait]
impl FlightSqlService for StrataFlightSql {
    type FlightService = StrataFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.auth.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (handle, schema) = self
            .runner
            .statement_info(caller(&request)?, query.query)
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle,
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let stream = self
            .runner
            .execute(caller(&request)?, ticket.statement_handle)
            .await?;
        Ok(Response::new(stream))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let prepared = self.runner.prepare(caller(&request)?, query.query).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared.handle,
            dataset_schema: schema_bytes(&prepared.dataset_schema)?,
            parameter_schema: schema_bytes(&prepared.parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = caller(&request)?;
        let parts = read_bind(request.into_inner(), self.runner.parameter_limit()).await?;
        let bound = self
            .runner
            .bind(who, query.prepared_statement_handle, parts)
            .await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (handle, schema) = self
            .runner
            .prepared_info(caller(&request)?, cmd.prepared_statement_handle)
            .await?;
        // The ticket carries the parameters, so executing it needs no state.
        let ticket = CommandPreparedStatementQuery {
            prepared_statement_handle: handle,
        };
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let stream = self
            .runner
            .execute(caller(&request)?, query.prepared_statement_handle)
            .await?;
        Ok(Response::new(stream))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.runner
            .close(&caller(&request)?, &query.prepared_statement_handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for schema in SCHEMAS {
            builder.append(CATALOG, schema);
        }
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.runner
            .catalog()
            .refresh()
            .await
            .map_err(|e| self.runner.status(e, ""))?;
        let mut builder = query.into_builder();
        for (schema, name, table) in self.runner.catalog().tables() {
            use datafusion::datasource::TableProvider;
            builder
                .append(CATALOG, &schema, &name, "TABLE", table.schema().as_ref())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = SQL_INFO.as_ref().ok_or_else(unavailable_info)?;
        let schema = query.clone().into_builder(info).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let info = SQL_INFO.as_ref().ok_or_else(unavailable_info)?;
        Ok(batch_stream(query.into_builder(info).build()))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let types = XDBC_TYPES.as_ref().ok_or_else(unavailable_info)?;
        let schema = query.into_builder(types).schema();
        flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let types = XDBC_TYPES.as_ref().ok_or_else(unavailable_info)?;
        Ok(batch_stream(query.into_builder(types).build()))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(
            &primary_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        // Warehouse tables have no declared keys.
        let schema = Arc::new(primary_keys_schema());
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| new_empty_array(f.data_type()))
            .collect();
        Ok(batch_stream(RecordBatch::try_new(schema, columns)))
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        let (running, queued, memory) = self.runner.load();
        match action.r#type.as_str() {
            // Monitoring: queries planning or running (their work has not
            // stopped yet, whatever their clients did).
            ACTIVE_QUERIES => Ok(action_result(running.to_string().into_bytes())),
            QUERY_STATUS => {
                let status = serde_json::json!({
                    "running": running,
                    "queued": queued,
                    "memory_bytes": memory,
                    "kept_parameter_bytes": self.runner.kept_parameter_bytes(),
                });
                Ok(action_result(status.to_string().into_bytes()))
            }
            other => Err(Status::unimplemented(format!(
                "unknown action `{other}`; this server supports the Flight SQL actions, `{ACTIVE_QUERIES}` and `{QUERY_STATUS}`"
            ))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: ACTIVE_QUERIES.into(),
                description: "How many queries are planning or running (a number, as text)".into(),
            }),
            Ok(ActionType {
                r#type: QUERY_STATUS.into(),
                description: "Queries running and queued, query memory in use (JSON)".into(),
            }),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
