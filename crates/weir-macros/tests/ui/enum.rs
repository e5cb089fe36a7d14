use weir_sql::Row;

#[derive(Row)]
enum Event {
    Click { user: String },
    View { page: String },
}

fn main() {}
