-- A study database made by sonieval at commit f89bb6a (schema version 1), dumped with
-- sqlite3's iterdump: a split-mode study of 2 clips x 2 systems, 2 raters, 3 visual marks by r001.
-- tests/study/test_study_questions.py migrates it; regenerate only with the code of that version.
BEGIN TRANSACTION;
CREATE TABLE enrolments (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	platform VARCHAR(20) NOT NULL, 
	participant_id VARCHAR(64), 
	platform_study_id VARCHAR(64), 
	platform_session_id VARCHAR(64), 
	assignment_id VARCHAR(64), 
	hit_id VARCHAR(64), 
	ip_hash VARCHAR(64) NOT NULL, 
	enrolled_at FLOAT NOT NULL, 
	PRIMARY KEY (study_id, rater_id), 
	CONSTRAINT uq_enrolments_participant UNIQUE (study_id, platform, participant_id), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
CREATE TABLE levels (
	study_id VARCHAR(200) NOT NULL, 
	file VARCHAR(200) NOT NULL, 
	lufs_measured FLOAT, 
	gain_db FLOAT NOT NULL, 
	lufs FLOAT, 
	true_peak_dbtp FLOAT, 
	target_lufs FLOAT, 
	limited VARCHAR(20) NOT NULL, 
	PRIMARY KEY (study_id, file), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE
);
INSERT INTO "levels" VALUES('v1study','0b92073c1e8dce129c263cda.wav',-1.41140877192451856818e+01,-1.18859122807548143184e+01,-2.59999654268216495722e+01,-1.7903253308046821246e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','2873117b28365f2ac8dc4443.wav',-1.3986265382710175942e+01,-1.20137346172898240581e+01,-2.59999995252455100573e+01,-1.80266348866419043872e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','28df34fbd572cb93c895159b.wav',-1.23971724090735140326e+01,-1.36028275909264859675e+01,-2.60000464625614817752e+01,-1.62778333811555278032e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','57f526f0ec42d1778d446035.wav',-1.23285483922537562049e+01,-1.36714516077462437952e+01,-2.6000068658403318266e+01,-16.1341518914588,-26.0,'');
INSERT INTO "levels" VALUES('v1study','62b90fb72cf33a1bd55bc5ad.wav',-1.36088659271171668056e+01,-1.23911340728828331945e+01,-2.59999772683547938348e+01,-1.66187062287581142072e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','7f85f46f71329a9c63772b8a.wav',-1.41140877313629129474e+01,-1.18859122686370870529e+01,-2.60000408025342153459e+01,-1.79048075040024947668e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','8e76c65c81762b30f50133ac.wav',-1.39862653742790126192e+01,-1.20137346257209873809e+01,-2.6000022036931060398e+01,-1.80287484989258608436e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','a0e51885cd8c9bdd868162bb.wav',-1.34815761700695198039e+01,-1.25184238299304801951e+01,-2.60000624058571787604e+01,-1.681374822979027428e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','af78ff09b7612946eb9af318.wav',-1.39862653742790126192e+01,-1.20137346257209873809e+01,-2.59999824748536276794e+01,-1.80287484989258608436e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','f1a5c45d0ce83b6b4bca6d46.wav',-1.41140877192451856818e+01,-1.18859122807548143184e+01,-2.60000425893103574996e+01,-1.79028817662295409714e+01,-26.0,'');
INSERT INTO "levels" VALUES('v1study','f79cd53ba8c1eff63347b347.wav',-1.41140877192451856818e+01,-1.18859122807548143184e+01,-2.60000627264532759843e+01,-1.79036045343358587444e+01,-26.0,'');
CREATE TABLE listening (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	position INTEGER NOT NULL, 
	label VARCHAR(4) NOT NULL, 
	trial_id VARCHAR(40), 
	listened_s FLOAT NOT NULL, 
	PRIMARY KEY (study_id, rater_id, position, label), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
CREATE TABLE page_log (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	position INTEGER NOT NULL, 
	session INTEGER NOT NULL, 
	shown_at FLOAT, 
	submitted_at FLOAT NOT NULL, 
	page_seconds FLOAT, 
	listened_total_s FLOAT, 
	n_switches INTEGER, 
	loop_used INTEGER, 
	PRIMARY KEY (study_id, rater_id, position), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
INSERT INTO "page_log" VALUES('v1study','r001',0,1,1.79669931379860377306e+09,1.79669931381527328484e+09,1.66695117950439453125e-02,NULL,NULL,NULL);
INSERT INTO "page_log" VALUES('v1study','r001',1,1,1.79669931382588577272e+09,1.79669931382988142965e+09,3.9956569671630859375e-03,NULL,NULL,NULL);
INSERT INTO "page_log" VALUES('v1study','r001',2,1,1.79669931383366775516e+09,1.79669931383788371087e+09,0.00421595573425293,NULL,NULL,NULL);
CREATE TABLE page_trials (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	position INTEGER NOT NULL, 
	slot INTEGER NOT NULL, 
	trial_id VARCHAR(40) NOT NULL, 
	PRIMARY KEY (study_id, rater_id, position, slot), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
CREATE TABLE "plan" (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	position INTEGER NOT NULL, 
	trial_id VARCHAR(40) NOT NULL, 
	attributes VARCHAR(40) NOT NULL, 
	block VARCHAR(10) NOT NULL, 
	shown_at FLOAT, 
	PRIMARY KEY (study_id, rater_id, position), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE, 
	FOREIGN KEY(study_id, trial_id) REFERENCES trials (study_id, trial_id) ON DELETE CASCADE
);
INSERT INTO "plan" VALUES('v1study','r001',0,'t0002','visual','visual',1.79669931379860377306e+09);
INSERT INTO "plan" VALUES('v1study','r001',1,'t0001','visual','visual',1.79669931382588577272e+09);
INSERT INTO "plan" VALUES('v1study','r001',2,'t0005','visual','visual',1.79669931383366775516e+09);
INSERT INTO "plan" VALUES('v1study','r001',3,'t0004','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',4,'t0003','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',5,'t0009','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',6,'t0007','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',7,'t0008','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',8,'t0006','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r001',9,'t0008','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',10,'t0001','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',11,'t0007','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',12,'t0002','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',13,'t0005','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',14,'t0006','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',15,'t0009','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',16,'t0003','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r001',17,'t0004','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',0,'t0009','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',1,'t0005','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',2,'t0003','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',3,'t0002','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',4,'t0001','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',5,'t0008','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',6,'t0004','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',7,'t0007','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',8,'t0006','audio','audio',NULL);
INSERT INTO "plan" VALUES('v1study','r002',9,'t0005','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',10,'t0007','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',11,'t0009','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',12,'t0008','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',13,'t0002','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',14,'t0003','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',15,'t0001','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',16,'t0004','visual','visual',NULL);
INSERT INTO "plan" VALUES('v1study','r002',17,'t0006','visual','visual',NULL);
CREATE TABLE rater_sessions (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	session INTEGER NOT NULL, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	pages INTEGER NOT NULL, 
	ended_by VARCHAR(10), 
	PRIMARY KEY (study_id, rater_id, session), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
INSERT INTO "rater_sessions" VALUES('v1study','r001',1,1.79669931379860377306e+09,NULL,3,NULL);
CREATE TABLE raters (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	rater_index INTEGER NOT NULL, 
	seed INTEGER NOT NULL, 
	block_order VARCHAR(40) NOT NULL, 
	created_at FLOAT NOT NULL, 
	familiarised_at FLOAT, 
	PRIMARY KEY (study_id, rater_id), 
	CONSTRAINT uq_raters_index UNIQUE (study_id, rater_index), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE, 
	UNIQUE (token_hash)
);
INSERT INTO "raters" VALUES('v1study','r001','0ff09e2493629ed79d53b504f104f93b470a3776dc8bb29837b5342034b040b1',0,835264008,'visual,audio',1.7966993137600288391e+09,NULL);
INSERT INTO "raters" VALUES('v1study','r002','755cb2fbee370d8addb3ff6f181fc48a9a827f0223e5fd1a895c1fb6c07aa3d4',1,683553100,'audio,visual',1.7966993137691392899e+09,NULL);
CREATE TABLE ratings (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	trial_id VARCHAR(40) NOT NULL, 
	attribute VARCHAR(10) NOT NULL, 
	mark INTEGER NOT NULL, 
	scale_min INTEGER NOT NULL, 
	scale_max INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	seed INTEGER NOT NULL, 
	mode VARCHAR(10) NOT NULL, 
	shown_at FLOAT, 
	submitted_at FLOAT NOT NULL, 
	PRIMARY KEY (study_id, rater_id, trial_id, attribute), 
	CONSTRAINT ck_ratings_mark_in_scale CHECK (mark >= scale_min AND mark <= scale_max), 
	CONSTRAINT ck_ratings_attribute CHECK (attribute IN ('visual', 'audio')), 
	FOREIGN KEY(study_id, scale_min, scale_max) REFERENCES studies (study_id, scale_min, scale_max) ON DELETE CASCADE, 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE, 
	FOREIGN KEY(study_id, trial_id) REFERENCES trials (study_id, trial_id) ON DELETE CASCADE
);
INSERT INTO "ratings" VALUES('v1study','r001','t0002','visual',2,1,5,0,835264008,'split',1.79669931379860377306e+09,1.79669931381527328484e+09);
INSERT INTO "ratings" VALUES('v1study','r001','t0001','visual',3,1,5,1,835264008,'split',1.79669931382588577272e+09,1.79669931382988142965e+09);
INSERT INTO "ratings" VALUES('v1study','r001','t0005','visual',4,1,5,2,835264008,'split',1.79669931383366775516e+09,1.79669931383788371087e+09);
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	applied_at FLOAT NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1,1.79669931373798179622e+09);
CREATE TABLE screening_checks (
	study_id VARCHAR(200) NOT NULL, 
	rater_id VARCHAR(40) NOT NULL, 
	"check" VARCHAR(40) NOT NULL, 
	n_trials INTEGER NOT NULL, 
	n_correct INTEGER NOT NULL, 
	pass_min INTEGER NOT NULL, 
	passed INTEGER NOT NULL, 
	responses VARCHAR(200) NOT NULL, 
	answers VARCHAR(200) NOT NULL, 
	seed INTEGER NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT NOT NULL, 
	PRIMARY KEY (study_id, rater_id, "check"), 
	FOREIGN KEY(study_id, rater_id) REFERENCES raters (study_id, rater_id) ON DELETE CASCADE
);
CREATE TABLE studies (
	study_id VARCHAR(200) NOT NULL, 
	mode VARCHAR(10) NOT NULL, 
	attributes VARCHAR(40) NOT NULL, 
	design VARCHAR(10) NOT NULL, 
	trials_per_rater INTEGER, 
	min_ratings_per_trial INTEGER NOT NULL, 
	scale_min INTEGER NOT NULL, 
	scale_max INTEGER NOT NULL, 
	seed INTEGER NOT NULL, 
	study_dir TEXT NOT NULL, 
	status VARCHAR(10) NOT NULL, 
	admin_token_hash VARCHAR(64) NOT NULL, 
	min_listen_fraction FLOAT NOT NULL, 
	familiarisation TEXT NOT NULL, 
	provenance TEXT NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (study_id), 
	CONSTRAINT uq_studies_scale UNIQUE (study_id, scale_min, scale_max), 
	CONSTRAINT ck_studies_mode CHECK (mode IN ('joint', 'split', 'multi')), 
	CONSTRAINT ck_studies_status CHECK (status IN ('open', 'closed')), 
	CONSTRAINT ck_studies_scale CHECK (scale_max > scale_min)
);
INSERT INTO "studies" VALUES('v1study','split','visual,audio','full',NULL,1,1,5,42,'/tmp/sq_fixture/run/study','open','b2708cab2ac01f8c388f9276b9769d4eccd723dd0f5e5febcf7d55ae87261f25',0.0,'{}','{"source": {"kind": "folders", "originals": "/tmp/sq_fixture/run/input/originals", "systems": {"sysA": "/tmp/sq_fixture/run/input/system0", "sysB": "/tmp/sq_fixture/run/input/system1"}}, "anchor": "anchor_lowpass_3500Hz", "n_raters_planned": 2, "notes": ["every file: 16000 Hz, 16-bit PCM with its own dither, each clip''s files as long as its original (10 ms fade where one is trimmed or padded)"], "loudness": {"target_lufs": -26.0, "ceiling_dbtp": -1.0, "max_gain_db": 30.0, "standard": "ITU-R BS.1770-4 (pyloudnorm)", "true_peak_oversampling": 4}, "format": {"sample_rate": 16000, "subtype": "PCM_16", "dither": "TPDF, +-1 LSB, seeded by the file name", "length": "every file of a clip as long as its original (at the study''s rate)", "edge_fade_ms": 10.0}}',1.79669931374586272238e+09);
CREATE TABLE study_options (
	study_id VARCHAR(200) NOT NULL, 
	options TEXT NOT NULL, 
	PRIMARY KEY (study_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE
);
INSERT INTO "study_options" VALUES('v1study','{"enrolment": {"cap": 2, "completion_code": null, "completion_url": null, "enabled": false, "key_hash": null, "max_per_ip_per_hour": 5, "max_per_minute": 30, "per_rater_codes": false, "reenrol_block_hours": 24.0, "release_after_minutes": 60.0, "require_participant_id": false, "screened_out_code": null, "trust_proxy_headers": false, "trusted_proxy_hops": 1}, "headphones": {"enabled": false, "on_fail": "continue", "salt": ""}, "rating_scale": "categories", "sessions": {"idle_minutes": 20.0, "minutes": null, "pages": null}, "title": null}');
CREATE TABLE trials (
	study_id VARCHAR(200) NOT NULL, 
	trial_id VARCHAR(40) NOT NULL, 
	clip_id VARCHAR(200) NOT NULL, 
	category VARCHAR(200) NOT NULL, 
	system_id TEXT NOT NULL, 
	role VARCHAR(20) NOT NULL, 
	original_file VARCHAR(200) NOT NULL, 
	stimulus_file VARCHAR(200) NOT NULL, 
	waveform_file VARCHAR(200) NOT NULL, 
	stimulus_seconds FLOAT NOT NULL, 
	instruction TEXT NOT NULL, 
	expected_mark INTEGER, 
	source_key TEXT NOT NULL, 
	PRIMARY KEY (study_id, trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE, 
	CONSTRAINT ck_trials_role CHECK (role IN ('sonification', 'reference', 'anchor', 'attention'))
);
INSERT INTO "trials" VALUES('v1study','t0001','clip0','','anchor_lowpass_3500Hz','anchor','0b92073c1e8dce129c263cda.wav','7f85f46f71329a9c63772b8a.wav','7f85f46f71329a9c63772b8a.png',0.3,'',NULL,'anchor/anchor_lowpass_3500Hz/clip0');
INSERT INTO "trials" VALUES('v1study','t0002','clip1','','hidden_reference','reference','af78ff09b7612946eb9af318.wav','8e76c65c81762b30f50133ac.wav','8e76c65c81762b30f50133ac.png',0.3,'',NULL,'reference/hidden_reference/clip1');
INSERT INTO "trials" VALUES('v1study','t0003','clip0','','sysA','sonification','0b92073c1e8dce129c263cda.wav','62b90fb72cf33a1bd55bc5ad.wav','62b90fb72cf33a1bd55bc5ad.png',0.3,'',NULL,'sonification/sysA/clip0');
INSERT INTO "trials" VALUES('v1study','t0004','clip1','','anchor_lowpass_3500Hz','anchor','af78ff09b7612946eb9af318.wav','2873117b28365f2ac8dc4443.wav','2873117b28365f2ac8dc4443.png',0.3,'',NULL,'anchor/anchor_lowpass_3500Hz/clip1');
INSERT INTO "trials" VALUES('v1study','t0005','clip1','','sysB','sonification','af78ff09b7612946eb9af318.wav','57f526f0ec42d1778d446035.wav','57f526f0ec42d1778d446035.png',0.3,'',NULL,'sonification/sysB/clip1');
INSERT INTO "trials" VALUES('v1study','t0006','clip0','','sysB','sonification','0b92073c1e8dce129c263cda.wav','28df34fbd572cb93c895159b.wav','28df34fbd572cb93c895159b.png',0.3,'',NULL,'sonification/sysB/clip0');
INSERT INTO "trials" VALUES('v1study','t0007','clip0','','hidden_reference','reference','0b92073c1e8dce129c263cda.wav','f1a5c45d0ce83b6b4bca6d46.wav','f1a5c45d0ce83b6b4bca6d46.png',0.3,'',NULL,'reference/hidden_reference/clip0');
INSERT INTO "trials" VALUES('v1study','t0008','clip0','','attention_check','attention','0b92073c1e8dce129c263cda.wav','f79cd53ba8c1eff63347b347.wav','f79cd53ba8c1eff63347b347.png',0.3,'Attention check: whatever you hear and see, set the mark to 2.',2,'attention/0/clip0');
INSERT INTO "trials" VALUES('v1study','t0009','clip1','','sysA','sonification','af78ff09b7612946eb9af318.wav','a0e51885cd8c9bdd868162bb.wav','a0e51885cd8c9bdd868162bb.png',0.3,'',NULL,'sonification/sysA/clip1');
COMMIT;
