use weir_sql::Row;

#[derive(Row)]
struct Order {
    id: i64,
    #[weir(rename = "ID")]
    legacy_id: i64,
}

fn main() {}
