"""The GraphQL read side: types, access directives, loaders' context and the schema."""
