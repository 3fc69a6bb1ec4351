"""The dimensions usage is grouped and filtered by, and the SQL each one needs."""

from __future__ import annotations

from enum import StrEnum

from gql_usage.storage.models import NO_USER


class Dimension(StrEnum):
    """A dimension to group by (GraphQL ``UsageDimension``: the value is the member's
    name); ``column`` is its column in both usage tables and in the cube."""

    ENDPOINT = "ENDPOINT"
    API_KEY = "API_KEY"
    SOURCE = "SOURCE"
    USER = "USER"

    @property
    def column(self) -> str:
        return _COLUMNS[self]


_COLUMNS = {Dimension.ENDPOINT: "endpoint_id", Dimension.API_KEY: "api_key_id",
            Dimension.SOURCE: "source_id", Dimension.USER: "user_id"}

#: Per dimension, the table its ids point to and the SQL of the key the API orders rows
#: by (``{e}``: that table's alias): the endpoint path, the source key, and for API keys
#: and users their global id (``gql_usage.graphql.ids``: base64 of "<Type>:<external
#: id>"; PostgreSQL's base64 breaks lines every 76 characters, hence the ``translate``;
#: SQLite calls the registered ``gql_global_id``, see ``gql_usage.storage.sqlite_backend``).
ORDER_KEYS: dict[Dimension, tuple[str, dict[str, str]]] = {
    Dimension.ENDPOINT: ("endpoint", {"postgres": "{e}.path", "sqlite": "{e}.path"}),
    Dimension.SOURCE: ("source", {"postgres": '{e}."key"', "sqlite": '{e}."key"'}),
    Dimension.API_KEY: ("api_key", {
        "postgres": "translate(encode(convert_to('ApiKey:' || {e}.external_id, 'UTF8'), "
                    "'base64'), chr(10), '')",
        "sqlite": "gql_global_id('ApiKey', {e}.external_id)"}),
    Dimension.USER: ("app_user", {
        "postgres": "translate(encode(convert_to('User:' || {e}.external_id, 'UTF8'), "
                    "'base64'), chr(10), '')",
        "sqlite": "gql_global_id('User', {e}.external_id)"}),
}

#: Every id an account can have in each dimension column (so an index can seek value by
#: value).
ACCOUNT_IDS = {
    "api_key_id": "SELECT id FROM api_key WHERE account_id = ",
    "endpoint_id": "SELECT endpoint_id FROM account_endpoint WHERE account_id = ",
    "source_id": "SELECT source_id FROM account_source WHERE account_id = ",
    "user_id": f"SELECT {NO_USER} UNION ALL SELECT id FROM app_user WHERE account_id = ",
}
