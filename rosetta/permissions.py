from rest_framework import permissions


class ModelPermissions(permissions.DjangoModelPermissions):
    """Authenticated users may read; writes need the model's add/change/delete permission."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
    }


class CanChangeObject(permissions.BasePermission):
    """For actions such as start / pause / test-connection: the model's change permission."""

    def has_permission(self, request, view):
        model = view.get_queryset().model
        return bool(
            request.user
            and request.user.is_authenticated
            and request.user.has_perm(f"{model._meta.app_label}.change_{model._meta.model_name}")
        )
