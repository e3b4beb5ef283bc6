//! What the server tells drivers about itself: `GetSqlInfo` and
//! `GetXdbcTypeInfo`. JDBC and ODBC drivers read these to decide how to quote
//! identifiers and which types to offer.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{Nullable, Searchable, SqlInfo, XdbcDataType};

/// The server's `GetSqlInfo` answers.
pub static SQL_INFO: LazyLock<Option<SqlInfoData>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Strata");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // Arrow IPC format version (Schema.fbs).
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    // Tables are written only by pipelines and backfills.
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 1i32);
    b.append(SqlInfo::SqlIdentifierCase, 2i32);
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.build().ok()
});

fn type_info(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: matches!(data_type, XdbcDataType::XdbcVarchar).then(|| "'".into()),
        literal_suffix: matches!(data_type, XdbcDataType::XdbcVarchar).then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

/// The column types Strata tables use, for `GetXdbcTypeInfo`.
pub static XDBC_TYPES: LazyLock<Option<XdbcTypeInfoData>> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        type_info("BOOLEAN", XdbcDataType::XdbcBit, Some(1)),
        type_info("INTEGER", XdbcDataType::XdbcInteger, Some(32)),
        type_info("BIGINT", XdbcDataType::XdbcBigint, Some(64)),
        type_info("FLOAT", XdbcDataType::XdbcFloat, Some(24)),
        type_info("DOUBLE", XdbcDataType::XdbcDouble, Some(53)),
        type_info("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
        type_info("VARCHAR", XdbcDataType::XdbcVarchar, None),
        type_info("VARBINARY", XdbcDataType::XdbcVarbinary, None),
        type_info("DATE", XdbcDataType::XdbcDate, None),
        type_info("TIMESTAMP", XdbcDataType::XdbcTimestamp, None),
    ] {
        b.append(info);
    }
    b.build().ok()
});
