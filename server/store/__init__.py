"""The store, the durable truth: tables, engines and sessions, migrations, and the message log's group commit."""
