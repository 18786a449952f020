-- Daily mean, max and coverage per station and pollutant.
select station_code,
       station_name,
       municipality,
       pollutant,
       unit,
       measured_at::date                  as day,
       round(avg(value)::numeric, 2)      as mean_value,
       max(value)                         as max_value,
       count(*)                           as hours_measured
from {{ source('staging', 'air_quality_readings') }}
group by station_code, station_name, municipality, pollutant, unit, measured_at::date
