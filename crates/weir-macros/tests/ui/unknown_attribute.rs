use weir_sql::Row;

#[derive(Row)]
struct Order {
    id: i64,
    #[weir(default)]
    note: Option<String>,
}

fn main() {}
