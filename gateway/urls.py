from django.urls import path

from gateway import views

urlpatterns = [
    path("mqtt-demo/", views.mqtt_demo, name="mqtt_demo"),
]
