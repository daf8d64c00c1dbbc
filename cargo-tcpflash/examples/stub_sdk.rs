//! Builds the stub NONOS SDK into a folder: `cargo run -p cargo-tcpflash --example stub_sdk -- DIR`
//! (for trying `--platform nonos-sdk` without the real SDK).
fn main() {
    let dir = std::env::args_os().nth(1).expect("usage: stub_sdk DIR");
    match cargo_tcpflash::stub_sdk::build(std::path::Path::new(&dir)) {
        Ok(dir) => println!("{}", dir.display()),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
