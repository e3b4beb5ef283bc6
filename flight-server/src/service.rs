//! The Flight SQL service: the protocol's calls mapped onto the warehouse
//! catalog and the query runner, behind authentication.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use arrow::compute::concat_batches;
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
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::execution::context::SessionContext;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Authenticator;
use crate::catalog::{CATALOG, SCHEMAS, WarehouseCatalog};
use crate::query_runner::{DoGetStream, QueryRunner};
use crate::server_info::{SQL_INFO, XDBC_TYPES};
use crate::statement::{StatementHandle, number_placeholders};

/// The Flight SQL service over a warehouse.
pub struct StrataFlightSql {
    runner: QueryRunner,
    auth: Authenticator,
}

impl StrataFlightSql {
    /// A service querying `catalog` through `ctx`, authenticating with `auth`.
    pub fn new(ctx: SessionContext, catalog: Arc<WarehouseCatalog>, auth: Authenticator) -> Self {
        StrataFlightSql {
            runner: QueryRunner::new(ctx, catalog),
            auth,
        }
    }

    /// Queries whose results are still streaming.
    pub fn active_queries(&self) -> usize {
        self.runner.active_queries()
    }
}

/// A handle for a client's SQL, with `?` placeholders numbered.
fn new_handle(sql: &str) -> Result<StatementHandle, Status> {
    let sql = number_placeholders(sql)
        .map_err(|e| Status::invalid_argument(format!("SQL syntax error: {e}")))?;
    Ok(StatementHandle::new(sql))
}

fn decode_handle(bytes: &[u8]) -> Result<StatementHandle, Status> {
    StatementHandle::decode(bytes).map_err(|e| Status::invalid_argument(e.to_string()))
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
        self.auth.check(request.metadata())?;
        let handle = new_handle(&query.query)?;
        let df = self.runner.plan(&handle).await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode().into(),
        };
        flight_info(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let handle = decode_handle(&ticket.statement_handle)?;
        Ok(Response::new(self.runner.execute(&handle).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.auth.check(request.metadata())?;
        let handle = new_handle(&query.query)?;
        let df = self.runner.plan(&handle).await?;
        let parameters = self.runner.parameter_schema(&df, &handle.sql)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode().into(),
            dataset_schema: schema_bytes(df.schema().as_arrow())?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.auth.check(request.metadata())?;
        let handle = decode_handle(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(Status::from)?;
        let Some(first) = batches.first() else {
            return Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(handle.encode().into()),
            });
        };
        let batch = concat_batches(&first.schema(), &batches)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let bound = self.runner.bind(&handle, &batch)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
        let mut handle = decode_handle(&cmd.prepared_statement_handle)?;
        let df = self.runner.plan(&handle).await?;
        // The ticket carries the parameters, so executing it needs no state.
        if handle.params.is_none()
            && let Some(batch) = self.runner.server_side_params(&handle)?
        {
            handle = handle
                .with_params(&batch)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let ticket = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.encode().into(),
        };
        flight_info(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let handle = decode_handle(&query.prepared_statement_handle)?;
        Ok(Response::new(self.runner.execute(&handle).await?))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.auth.check(request.metadata())?;
        if let Ok(handle) = StatementHandle::decode(&query.prepared_statement_handle) {
            self.runner.forget(&handle);
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
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
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
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
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(batch_stream(builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let info = SQL_INFO.as_ref().ok_or_else(unavailable_info)?;
        Ok(batch_stream(query.into_builder(info).build()))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
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
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
        let types = XDBC_TYPES.as_ref().ok_or_else(unavailable_info)?;
        Ok(batch_stream(query.into_builder(types).build()))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.check(request.metadata())?;
        flight_info(
            &primary_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.auth.check(request.metadata())?;
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
        self.auth.check(request.metadata())?;
        let action = request.into_inner();
        match action.r#type.as_str() {
            // Monitoring: how many result streams are open.
            "strata.active_queries" => {
                let body = arrow_flight::Result {
                    body: self.active_queries().to_string().into_bytes().into(),
                };
                Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
            }
            other => Err(Status::unimplemented(format!(
                "unknown action `{other}`; this server supports the Flight SQL actions and `strata.active_queries`"
            ))),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
