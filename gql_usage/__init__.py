"""gql_usage: GraphQL API-usage analytics backend."""

__version__ = "0.1.0"
