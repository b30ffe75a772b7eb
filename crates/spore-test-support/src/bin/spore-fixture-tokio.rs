//! A test image whose `main` is `#[tokio::main]`: `spore::init()` then runs
//! inside the user's runtime, as in the README's example.

#[tokio::main]
async fn main() {
    spore::init();
    let _ = spore_test_support::funcs::add(1, 1);
    eprintln!("spore-fixture-tokio: the image of spore's tests; see spore-test-support");
    std::process::exit(2);
}
