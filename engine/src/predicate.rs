//! SQL predicate results as filter masks.

use arrow::array::{Array, BooleanArray};
use arrow::compute::prep_null_mask_filter;

/// A predicate's result with null (unknown) as false, as SQL's WHERE reads
/// it. (`prep_null_mask_filter` itself requires a null buffer.)
pub(crate) fn null_is_false(values: &BooleanArray) -> BooleanArray {
    if values.null_count() == 0 {
        values.clone()
    } else {
        prep_null_mask_filter(values)
    }
}
