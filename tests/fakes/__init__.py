"""Local servers that speak third-party protocols on 127.0.0.1, for tests."""
