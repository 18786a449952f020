{# Models go to the schema they name (`marts`), not `<target schema>_marts`: the quality
   checks and the dashboards read marts.daily_station_averages. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}
