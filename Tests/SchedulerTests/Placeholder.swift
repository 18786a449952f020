// integration tests below
