//! `hello-p1`: a WASI preview-1 command module. Prints its arguments and `$NAME`, then exits
//! with `$EXIT_CODE` (default 0).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = std::env::var("NAME").unwrap_or_else(|_| "nobody".into());
    println!("hello {name} from preview 1, args {args:?}");
    let code: i32 = std::env::var("EXIT_CODE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
