"""`field__among=[...]`: SQL IN for long lists of values the database itself gave us (ids,
addresses), sent to the driver as they are.

Django's `__in` prepares every value through the field, about 3 µs each; one outreach
batch passes tens of thousands (docs/adr/0011). Never use it for values from users.
"""

from django.core.exceptions import EmptyResultSet
from django.db import models
from django.db.models import Lookup


class Among(Lookup):
    lookup_name = "among"
    prepare_rhs = False

    def get_prep_lookup(self):
        return list(self.rhs)

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        if not self.rhs:
            raise EmptyResultSet
        if connection.vendor == "postgresql":
            # One array parameter, cast to the column's own type: without the cast the driver
            # may send a list of ints as numeric[] and the column loses its index; with one
            # parameter per value, the driver spends longer splitting the query than the
            # server running it.
            db_type = self.lhs.output_field.db_type(connection)
            if db_type is not None:
                # Text as text[] (never cut to a varchar's length, and its index still serves).
                cast = "text" if db_type.startswith(("varchar", "char", "text")) else db_type
                return f"{lhs} = ANY(%s::{cast}[])", [*params, self.rhs]
        return f"{lhs} IN ({', '.join(['%s'] * len(self.rhs))})", [*params, *self.rhs]


models.Field.register_lookup(Among)
models.ForeignKey.register_lookup(Among)  # related fields keep lookups of their own
