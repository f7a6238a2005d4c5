from django.core.validators import RegexValidator

# Lower-case so that slot names (which PostgreSQL restricts to [a-z0-9_]) and
# publication names never need case-sensitive quoting by an operator.
postgres_identifier = RegexValidator(
    regex=r"^[a-z_][a-z0-9_]{0,62}$",
    message="Use a PostgreSQL identifier: lower-case letters, digits and underscores, "
    "starting with a letter or underscore, at most 63 characters.",
    code="invalid_identifier",
)
